"""Moved to stream_app.services.moto (``mirrorscope services up`` uses it too); these names
stay importable from here for the tests."""

from stream_app.services.moto import *  # noqa: F401,F403
from stream_app.services.moto import CREDENTIALS, MotoServer, moto_server_exe  # noqa: F401
from stream_app.services.kafka import free_port  # noqa: F401
