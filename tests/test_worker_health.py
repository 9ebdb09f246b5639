"""`mirrorscope worker` health that tells the truth (issue 20), with a real Kafka broker and
Redis: a worker whose packet agent crashes (here: it cannot read the partitions' state in
Redis, because it was given another state key than the worker that wrote it, or because the
state there was forged) says so on /readyz (503, with the reason) and in /metrics, instead of
staying green with lag 0."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.services.fixtures import kafka_broker  # noqa: F401
from tests.services.kafka_service import create_topic
from tests.services.worker_proc import Worker
from tests.test_worker_kafka import PARTS, Env, capture  # noqa: F401


@pytest.fixture
def env(kafka_broker, redis_db, tmp_path):  # noqa: F811
    tag = uuid.uuid4().hex[:8]
    e = Env(kafka_broker.bootstrap, redis_db, tag, tmp_path, 1)
    create_topic(e.bootstrap, e.topic, 4)
    for t in e.results.values():
        create_topic(e.bootstrap, t, 2)
    yield e
    for w in e.workers:
        try:
            w.stop(timeout=30)
        except Exception:
            w.kill()


def test_a_crashed_agent_turns_readiness_false(env, capture):  # noqa: F811
    parts, _ = capture
    assert PARTS == 3
    w1 = env.worker("w1")
    w1.wait_ready()
    env.replay(parts[0], end_marker=False)  # open flows: state in Redis, signed with w1's key
    deadline = time.monotonic() + 60
    while w1.stats().get("checkpoints", 0) == 0 or w1.stats().get("batches", 0) == 0:
        assert time.monotonic() < deadline, w1.tail()
        time.sleep(0.3)
    assert w1.stop(timeout=60) == 0  # SIGTERM: last checkpoint, partitions handed back

    w2 = Worker("w2", env.tmp, env.bootstrap, env.redis_url, env.topic, env.group,
                env.results, ["--processes", "1"])
    w2.env["MIRRORSCOPE_STATE_KEY"] = "another-key"  # cannot verify what w1 wrote
    env.workers.append(w2.start())
    env.replay(parts[1], end_marker=False)
    deadline = time.monotonic() + 90
    while True:
        code, body = w2.get("/readyz")
        if code == 503 and body and json.loads(body)["problems"]:
            break
        assert time.monotonic() < deadline, (code, body, w2.tail())
        time.sleep(0.3)
    status = json.loads(body)
    assert status["ready"] is False
    assert any("agent crashed" in p for p in status["problems"]), status["problems"]
    m = w2.metrics()
    assert m["mirrorscope_worker_ready"] == 0
    assert m["mirrorscope_worker_agent_crashes_total"] >= 1
    assert m["mirrorscope_worker_state_unreadable_total"] >= 1
    assert m["mirrorscope_worker_batches_total"] == 0  # it applied nothing with a bad key


class _WritesAFile:
    """Unpickled by pickle.loads, this creates a file: what a forged state blob attempted
    against the pickle codec."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.path}",))


def _crash_reason(w: Worker, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        code, body = w.get("/readyz")
        if code == 503 and body and json.loads(body)["problems"]:
            return " ".join(json.loads(body)["problems"])
        assert time.monotonic() < deadline, (code, body, w.tail())
        time.sleep(0.3)


def test_forged_state_in_redis_is_refused_and_nothing_runs(env, capture):  # noqa: F811
    """Issue 13's must-show with the real services: someone who can write to Redis but has
    no state key replaces a flow blob with a pickle that would create a file, or marks a
    partition's state with a version no worker knows. A worker holding the right key refuses
    each (state_unreadable, not ready, the reason on /readyz: docs/distributed.md) and runs
    nothing."""
    import pickle

    import msgspec
    import redis

    from stream_app.state.store import keys

    parts, _ = capture
    w1 = env.worker("w1")
    w1.wait_ready()
    env.replay(parts[0], end_marker=False)  # open flows: their state goes to Redis
    deadline = time.monotonic() + 60
    while w1.stats().get("checkpoints", 0) == 0 or w1.stats().get("batches", 0) == 0:
        assert time.monotonic() < deadline, w1.tail()
        time.sleep(0.3)
    assert w1.stop(timeout=60) == 0  # last checkpoint on SIGTERM
    r = redis.Redis.from_url(env.redis_url)
    names = [f"{env.group}:{env.topic}:{p}" for p in range(4)]
    held = {n: r.hgetall(keys(n)[2]) for n in names}
    metas = {n: r.get(keys(n)[1]) for n in names}
    assert sum(map(len, held.values())) > 0, "w1 stored no flow state"
    marker = env.tmp / "pwned"
    evil = pickle.dumps(_WritesAFile(str(marker)))

    def forge_and_run(name: str, what: str) -> str:
        w = Worker(name, env.tmp, env.bootstrap, env.redis_url, env.topic, env.group,
                   env.results, ["--processes", str(env.processes)])
        env.workers.append(w.start())
        env.replay(parts[1], end_marker=False)
        reason = _crash_reason(w)
        m = w.metrics()
        assert m["mirrorscope_worker_state_unreadable_total"] >= 1, (what, m)
        assert m["mirrorscope_worker_ready"] == 0
        assert not marker.exists(), what
        w.kill()
        return reason

    # 1. Every stored flow blob replaced by the pickle, with no valid tag (no key).
    for n, flows in held.items():
        for fld in flows:
            r.hset(keys(n)[2], fld, bytes([2]) + bytes(16) + evil)
    reason = forge_and_run("w2", "forged blob")
    assert "integrity check" in reason, reason
    # 2. The blobs put back, and every partition's Meta given a version no release wrote.
    for n, flows in held.items():
        if flows:
            r.hset(keys(n)[2], mapping=flows)
        if metas[n] is not None:
            meta = msgspec.msgpack.decode(metas[n])
            meta["version"] = 7
            r.set(keys(n)[1], msgspec.msgpack.encode(meta))
    reason = forge_and_run("w3", "unknown version")
    assert "state version 7" in reason and "reads 1, 2" in reason, reason
    # The control: what pickle.loads would have done with the forged bytes.
    pickle.loads(evil)
    assert marker.exists()
