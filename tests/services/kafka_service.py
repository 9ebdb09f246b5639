"""Moved to stream_app.services.kafka (``mirrorscope services up`` uses it too); these names
stay importable from here for the tests and bench/bench_collect.py."""

from stream_app.services.kafka import *  # noqa: F401,F403
from stream_app.services.kafka import (  # noqa: F401
    KAFKA_VERSION, POM, ROOT, LocalKafka, consume_all, create_topic, ensure_jars, free_port, jar_dir,
    jars_present, port_open,
)
