"""`mirrorscope worker` health that tells the truth (issue 20), with a real Kafka broker and
Redis: a worker whose packet agent crashes (here: it cannot read the partitions' state in
Redis, because it was given another state key than the worker that wrote it) says so on
/readyz (503, with the reason) and in /metrics, instead of staying green with lag 0."""

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
