"""tests.services.redis_service.LocalRedis (Debian's redis-server) and the redis_server / redis_db
fixtures (tests/services/fixtures.py, imported by tests/conftest.py)."""

from __future__ import annotations

import os
import signal

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.services.kafka_service import port_open
from tests.services.redis_service import LocalRedis, redis_server_exe

pytestmark = pytest.mark.skipif(redis_server_exe() is None,
                                reason="redis-server missing: apt-get install redis-server")


def once(url: str | None = None, **kw) -> redis.Redis:
    """A client that fails at once (redis-py retries a refused connection for seconds)."""
    kw.update(retry=Retry(NoBackoff(), 0), socket_connect_timeout=1)
    return redis.Redis.from_url(url, **kw) if url else redis.Redis(**kw)


@pytest.fixture
def local(tmp_path):
    r = LocalRedis(tmp_path / "redis")
    yield r
    r.stop()


def test_start_ping_and_url(local):
    local.start()
    assert local.running()
    assert local.url == f"redis://127.0.0.1:{local.port}/0"
    c = redis.Redis.from_url(local.url)
    assert c.ping()
    c.set("k", "v")
    assert c.get("k") == b"v"
    c.close()
    assert (local.workdir / "redis.pid").read_text().strip() == str(local.pid)
    # nothing is persisted
    local.stop()
    assert not list(local.workdir.glob("*.rdb")) and not list(local.workdir.glob("appendonly*"))


def test_password(tmp_path):
    r = LocalRedis(tmp_path, password="s3cret/with:odd@chars")
    r.start()
    try:
        assert r.url.startswith("redis://:") and "@127.0.0.1:" in r.url
        assert redis.Redis.from_url(r.url).ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            once(port=r.port).ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            once(port=r.port, password="wrong").ping()
    finally:
        r.stop()


def test_stop_start_keeps_the_port(local):
    local.start()
    port, url, pid = local.port, local.url, local.pid
    local.stop()
    assert not local.running() and not port_open(port)
    with pytest.raises(redis.exceptions.ConnectionError):
        once(url).ping()
    local.start()
    assert local.port == port and local.url == url and local.pid != pid
    assert redis.Redis.from_url(url).ping()


def test_kill(local):
    local.start()
    pid = local.pid
    local.kill()
    assert not local.running() and not port_open(local.port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    local.start()  # comes back on the same port
    assert redis.Redis.from_url(local.url).ping()


def test_stop_escalates_to_sigkill(local):
    local.start()
    os.kill(local.pid, signal.SIGSTOP)  # a stopped process ignores SIGTERM until continued
    local.stop(timeout=0.5)
    assert not local.running() and not port_open(local.port)


def test_missing_redis_server(tmp_path, monkeypatch):
    import tests.services.redis_service as mod
    monkeypatch.setattr(mod, "REDIS_SERVER", str(tmp_path / "nope"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-get install redis-server"):
        LocalRedis(tmp_path).start()


def test_fixtures(redis_server, redis_db):
    assert redis_db == redis_server.url
    c = redis.Redis.from_url(redis_db)
    assert c.dbsize() == 0
    c.set("left-over", 1)
    c.close()


def test_redis_db_is_flushed(redis_db):
    assert redis.Redis.from_url(redis_db).dbsize() == 0
