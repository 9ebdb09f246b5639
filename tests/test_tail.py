"""`mirrorscope tail`: result topics on a real Kafka broker, written as the worker writes them
(stream_app.worker.encode_results), read back as JSON lines and readable lines; a message that
is not a record is counted, not fatal; a live tail shows records sent after it started."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import msgspec

from tests.services.fixtures import kafka_broker  # noqa: F401
from stream_app.core.processor import Results
from tests.services.kafka_service import create_topic
from stream_app.tail import line
from stream_app.runtime.cores import encode_results
from tests.sink_helpers import make_alert, make_flow, make_http


def topics(bootstrap: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    names = {k: f"mirrorscope.{k}.{tag}" for k in ("flows", "http", "alerts")}
    for n in names.values():
        create_topic(bootstrap, n, 3)
    return names


def publish(bootstrap: str, names: dict[str, str], res: Results, junk: bool = False) -> None:
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for kind, key, value in encode_results(res):
        p.send(names[kind], key=key, value=value)
    if junk:
        p.send(names["flows"], key=b"x", value=b"\xc1 not msgpack")
    p.flush()
    p.close()


def tail(*args: str, bootstrap: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_app.cli", "tail", "--bootstrap",
                           bootstrap, *args], capture_output=True, text=True, timeout=timeout)


def test_tail_prints_the_records(kafka_broker):  # noqa: F811
    b = kafka_broker.bootstrap
    names = topics(b)
    res = Results(flows=[make_flow(i) for i in range(5)], http=[make_http(i) for i in range(4)],
                  alerts=[make_alert(1)])
    publish(b, names, res, junk=True)

    p = tail(names["flows"], names["http"], names["alerts"], "--from-beginning", "--format",
             "json", "--max", "10", bootstrap=b)
    assert p.returncode == 0, p.stderr
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    assert sorted(r["flow_id"] for r in recs if "flow_id" in r) == sorted(f.flow_id for f in res.flows)
    assert sorted(r["http_id"] for r in recs if "http_id" in r) == sorted(h.http_id for h in res.http)
    [a] = [r for r in recs if "alert_id" in r]
    assert a == msgspec.to_builtins(res.alerts[0])

    p = tail(names["flows"], "--from-beginning", "--idle-exit", "3", bootstrap=b)
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == sorted(line(msgspec.to_builtins(f)) for f in res.flows)
    assert "skipped 1 message(s) that were not records" in p.stderr

    p = tail(names["alerts"], "--from-beginning", "--max", "1", "--format", "json", "-t", bootstrap=b)
    assert json.loads(p.stdout)["ts"] == "2026-05-28 20:00:01.000"


def test_tail_follows_new_records(kafka_broker):  # noqa: F811
    b = kafka_broker.bootstrap
    names = topics(b)
    publish(b, names, Results(flows=[make_flow(100)]))  # before the tail: not shown
    proc = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "tail", names["flows"],
                             "--bootstrap", b, "--max", "2", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "watching" in proc.stderr.readline()  # assigned, positioned at the end
        publish(b, names, Results(flows=[make_flow(101), make_flow(102)]))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert sorted(json.loads(x)["flow_id"] for x in out.splitlines()) == ["flow-00000101", "flow-00000102"]


def test_tail_unknown_topic_is_a_clear_error(kafka_broker):  # noqa: F811
    p = tail("mirrorscope.nosuch." + uuid.uuid4().hex[:6], bootstrap=kafka_broker.bootstrap)
    assert p.returncode != 0 and "no such topic" in p.stderr and "Traceback" not in p.stderr
