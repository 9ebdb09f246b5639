"""pytest fixtures for the real services the collector tests use (a pytest plugin: import
these names into a test module or conftest, or list this module in ``pytest_plugins``).

Kafka, in order of preference:
1. ``MIRRORSCOPE_TEST_KAFKA=host:port``: an existing broker (cannot be stopped by the tests);
2. testcontainers' Kafka (KRaft) when a Docker daemon answers;
3. the local launcher (tests.services.kafka_service.LocalKafka: Maven Central's jars + java).
CI here has no Docker, so 3 is the path that must work.

Redis (``redis_server``, ``redis_db``), in the same order: ``MIRRORSCOPE_TEST_REDIS=redis://...``,
testcontainers' Redis when Docker answers, else tests.services.redis_service.LocalRedis (Debian's
redis-server). tests/conftest.py imports the two Redis fixtures, so every test under tests/
can name them without an import.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from collections.abc import Iterator

import pytest

from tests.services.kafka_service import LocalKafka, create_topic
from tests.services.moto_service import CREDENTIALS, MotoServer
from tests.services.redis_service import LocalRedis

log = logging.getLogger(__name__)


class ExternalKafka:
    controllable = False
    kind = "external"

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap

    def stop(self):  # pragma: no cover - only with an external broker
        raise RuntimeError("an external broker (MIRRORSCOPE_TEST_KAFKA) cannot be stopped")

    start = stop


class ContainerKafka:  # pragma: no cover - needs a Docker daemon
    controllable = False  # a restarted container gets a new host port
    kind = "testcontainers"

    def __init__(self, container):
        self.container = container
        self.bootstrap = container.get_bootstrap_server()

    def stop(self):
        raise RuntimeError("the testcontainers broker cannot be restarted on the same port")

    start = stop


@functools.lru_cache(maxsize=1)
def docker_available() -> bool:
    try:
        import docker
        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _local(tmp_path_factory) -> LocalKafka:
    k = LocalKafka(tmp_path_factory.mktemp("kafka"))
    k.kind = "local"
    k.start()
    return k


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory) -> Iterator:
    """A running Kafka broker: ``.bootstrap``, ``.kind``; ``.controllable`` ones also have
    ``stop()`` and ``start()`` (same address and data)."""
    env = os.environ.get("MIRRORSCOPE_TEST_KAFKA")
    if env:
        yield ExternalKafka(env)
        return
    if docker_available():  # pragma: no cover - no Docker daemon in CI here
        try:
            from testcontainers.community.kafka import KafkaContainer
            c = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
            c.start()
        except Exception as exc:
            log.warning("testcontainers Kafka failed (%s); using the local launcher", exc)
        else:
            try:
                yield ContainerKafka(c)
            finally:
                c.stop()
            return
    k = _local(tmp_path_factory)
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture
def controllable_kafka(kafka_broker, tmp_path_factory) -> Iterator:
    """A broker the test may stop and start: the session's when it can be, else a new local
    one for this test."""
    if kafka_broker.controllable:
        yield kafka_broker
        if not kafka_broker.running():
            kafka_broker.start()
        return
    k = _local(tmp_path_factory)
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture
def kafka_topic(kafka_broker):
    """new_topic(partitions) -> a fresh topic name on the session broker."""
    def new_topic(partitions: int = 12, broker=None) -> str:
        name = f"mirrorscope.packets.t{uuid.uuid4().hex[:10]}"
        create_topic((broker or kafka_broker).bootstrap, name, partitions)
        return name
    return new_topic


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory) -> Iterator[MotoServer]:
    m = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    m.start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def aws(moto_server, monkeypatch) -> str:
    """A clean moto backend and fake credentials in the environment; returns its URL."""
    moto_server.reset()
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    return moto_server.url


class ExternalRedis:
    controllable = False
    kind = "external"

    def __init__(self, url: str):
        self.url = url

    def stop(self):  # pragma: no cover - only with an external server
        raise RuntimeError("an external Redis (MIRRORSCOPE_TEST_REDIS) cannot be stopped")

    start = kill = stop


class ContainerRedis:  # pragma: no cover - needs a Docker daemon
    controllable = False  # a restarted container gets a new host port
    kind = "testcontainers"

    def __init__(self, container):
        self.container = container
        host = container.get_container_host_ip()
        self.port = int(container.get_exposed_port(container.port))
        self.url = f"redis://{host}:{self.port}/0"

    def stop(self):
        raise RuntimeError("the testcontainers Redis cannot be restarted on the same port")

    start = kill = stop


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator:
    """A running Redis for the session: ``.url`` (redis://host:port/0) and ``.kind``
    ("external", "testcontainers" or "local"). A ``.controllable`` one (the local launcher,
    LocalRedis) also has ``stop()``, ``start()`` (same port) and ``kill()``: a test that stops
    it must start it again before it ends."""
    env = os.environ.get("MIRRORSCOPE_TEST_REDIS")
    if env:
        yield ExternalRedis(env)
        return
    if docker_available():  # pragma: no cover - no Docker daemon in CI here
        try:
            from testcontainers.community.redis import RedisContainer
            c = RedisContainer("redis:7")
            c.start()
        except Exception as exc:
            log.warning("testcontainers Redis failed (%s); using the local launcher", exc)
        else:
            try:
                yield ContainerRedis(c)
            finally:
                c.stop()
            return
    r = LocalRedis(tmp_path_factory.mktemp("redis"))
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def redis_db(redis_server) -> str:
    """The session Redis, emptied (FLUSHALL) for this test; returns its URL."""
    import redis
    if redis_server.controllable and not redis_server.running():
        redis_server.start()  # an earlier test stopped it and did not start it again
    c = redis.Redis.from_url(redis_server.url, socket_timeout=10)
    try:
        c.flushall()
    finally:
        c.close()
    return redis_server.url
