"""Redaction on the distributed path: the secret-carrying capture (tests/secret_traffic.py)
replayed by `mirrorscope collect` into a real Kafka topic, analysed by a real `mirrorscope
worker` with its state and detector state in a real Redis, and written to S3 (moto's server) by
`mirrorscope sink s3`. No marker may be found in a result topic, an S3 object (raw, and its
Parquet rows), a Redis key or value, a file the worker or sink wrote, or a log line.

The packet topic is the mirrored traffic itself (payload bytes, bounded by the collectors'
payload policy): it is the input, and the test checks the markers are there, which proves
they reached the worker."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

import msgspec
import pyarrow.parquet as pq
import redis

from schemas.kinds import NAMES
from schemas.records import HttpTransaction
from stream_app.core.redact import REDACTED
from tests.services.kafka_service import consume_all, create_topic
from tests.secret_traffic import (
    CUSTOM_PARAM, MARKERS, SECRETS, leaks, write_detect_config, write_secret_capture)
from tests.services.collector_proc import MIRRORSCOPE
from tests.services.fixtures import kafka_broker  # noqa: F401
from tests.services.traffic import capture_of, tcp_flows, write_pcap
from tests.services.worker_proc import Worker
from tests.sink_helpers import client
from tests.test_worker_kafka import wait_for


def redis_dump(url: str) -> list[tuple[bytes, bytes]]:
    """Every key of the database with its value(s), whatever the type."""
    r = redis.Redis.from_url(url)
    out = []
    for k in r.scan_iter(count=1000):
        t = r.type(k).decode()
        if t == "string":
            v = r.get(k) or b""
        elif t == "hash":
            v = b"\n".join(a + b"=" + b for a, b in r.hgetall(k).items())
        elif t == "set":
            v = b"\n".join(r.smembers(k))
        elif t == "zset":
            v = b"\n".join(m for m, _ in r.zrange(k, 0, -1, withscores=True))
        elif t == "list":
            v = b"\n".join(r.lrange(k, 0, -1))
        else:
            v = b""
        out.append((k, v))
    return out


def test_no_secret_reaches_topics_redis_s3_or_logs(kafka_broker, redis_db, moto,  # noqa: F811
                                                   tmp_path):
    tag = uuid.uuid4().hex[:8]
    packets = f"packets-{tag}"
    results = {k: f"{k}-{tag}" for k in NAMES}
    create_topic(kafka_broker.bootstrap, packets, 2)
    for t in results.values():
        create_topic(kafka_broker.bootstrap, t, 1)
    pcap = tmp_path / "secrets.pcap"
    n = write_secret_capture(pcap)
    # a later, harmless conversation whose replay ends the capture (the end-of-capture marker)
    tail = tmp_path / "tail.pcap"
    write_pcap(tail, capture_of(tcp_flows(1, seed=99, client_net="10.99.0.0")),
               ts_start_ns=1_700_000_600_000_000_000)
    cfg = write_detect_config(tmp_path / "detect.json")

    w = Worker("w1", tmp_path, kafka_broker.bootstrap, redis_db, packets, f"g-{tag}", results,
               ["--redact-param", CUSTOM_PARAM, "--detect-config", str(cfg)]).start()
    try:
        w.wait_ready()
        # With --no-end-marker the flows stay open in the worker's state until the replay
        # with the marker ends them: the state in Redis is checked while it holds them.
        collect = []
        for end, capture in ((False, pcap), (True, tail)):
            r = subprocess.run([MIRRORSCOPE, "collect", "--transport", "kafka",
                                "--kafka-bootstrap", kafka_broker.bootstrap, "--kafka-topic",
                                packets, "--pcap", str(capture),
                                *([] if end else ["--no-end-marker"])],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr[-2000:]
            collect.append(r)
            if not end:
                # mid-stream: every request parsed and checkpointed, flows still held
                wait_for(lambda: w.stats().get("checkpoints", 0) > 0
                         and consume_all(kafka_broker.bootstrap, results["http"], timeout=10,
                                         idle=0.5).__len__() >= n,
                         "http records of the first replay", timeout=90, workers=[w])
                state_mid = redis_dump(redis_db)
        http = {}
        dec = msgspec.msgpack.Decoder(HttpTransaction)

        def all_http():
            for m in consume_all(kafka_broker.bootstrap, results["http"], timeout=10, idle=0.5):
                http[m.key] = dec.decode(m.value)
            return len(http) >= n + 1
        wait_for(all_http, "http records of both replays", timeout=90, workers=[w])
        wait_for(lambda: consume_all(kafka_broker.bootstrap, results["alerts"], timeout=5,
                                     idle=0.5), "an alert", timeout=60, workers=[w])
    finally:
        assert w.stop(timeout=60) == 0, w.tail()
    state_end = redis_dump(redis_db)

    # every request was analysed, with the credential's name and [redacted]
    kinds = {h.uri.partition("kind=")[2].split("&")[0] for h in http.values()} - {""}
    assert kinds == set(SECRETS)
    assert all(REDACTED in json.dumps(msgspec.to_builtins(h)) for h in http.values()
               if "kind=" in h.uri)
    assert state_mid and any(k.startswith(b"ms:") for k, _ in state_mid)  # flow state there
    assert any(k.startswith(b"md:") for k, _ in state_end)  # detector state there

    # the packet topic carries the markers: they did reach the worker
    raw_in = b"".join(m.value for m in consume_all(kafka_broker.bootstrap, packets, timeout=20))
    assert set(leaks(raw_in)) == set(MARKERS)

    found: dict[str, list[str]] = {}
    for kind, topic in results.items():
        msgs = consume_all(kafka_broker.bootstrap, topic, timeout=20)
        if kind in ("flows", "http", "alerts"):  # the capture is HTTP: every topic is read,
            assert msgs, kind                    # these three must have records

        found[f"topic {kind}"] = leaks(b"\n".join((m.key or b"") + b" " + m.value
                                                  + b"".join(v for _, v in m.headers)
                                                  for m in msgs))
    for label, dump in (("redis mid-stream", state_mid), ("redis at the end", state_end)):
        found[label] = leaks(b"\n".join(k + b" " + v for k, v in dump))

    # the S3 sink reads the result topics into moto's S3
    s3 = client("s3", moto)
    s3.create_bucket(Bucket=f"records-{tag}")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "MIRRORSCOPE_S3_BUCKET": f"records-{tag}",
           "MIRRORSCOPE_S3_ENDPOINT_URL": moto.url, "MIRRORSCOPE_DATA_DIR": str(tmp_path / "sink"),
           "MIRRORSCOPE_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
           **{f"MIRRORSCOPE_TOPIC_{k.upper()}": results[k] for k in NAMES},
           "MIRRORSCOPE_KAFKA_GROUP": f"s3-{tag}"}
    sink = subprocess.run([sys.executable, "-m", "stream_app.cli", "sink", "s3", "--idle-exit",
                           "4", "--log-level", "debug"], env=env, capture_output=True, text=True,
                          timeout=180)
    assert sink.returncode == 0, sink.stderr[-3000:]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=f"records-{tag}").get("Contents", [])]
    assert any(k.startswith("http/") for k in keys) and any(k.startswith("alerts/") for k in keys)
    for k in keys:
        body = s3.get_object(Bucket=f"records-{tag}", Key=k)["Body"].read()
        rows = json.dumps(pq.read_table(io.BytesIO(body)).to_pylist(), default=str) \
            if k.endswith(".parquet") else ""
        found[f"s3 {k}"] = leaks(k.encode() + body) + leaks(rows)
    s3_http = [r for k in keys if k.startswith("http/")
               for r in pq.read_table(io.BytesIO(s3.get_object(
                   Bucket=f"records-{tag}", Key=k)["Body"].read())).to_pylist()]
    assert len({r["http_id"] for r in s3_http}) == len(http)

    # logs and every file the processes wrote (worker log at debug level, Faust's data dir,
    # the sink's spool), and what the collector and the sink printed
    for p in tmp_path.rglob("*"):
        if p.is_file() and p not in (pcap, tail):
            found[f"file {p.relative_to(tmp_path)}"] = leaks(p.read_bytes())
    found["sink output"] = leaks(sink.stdout + sink.stderr)
    found["collect output"] = leaks("".join(r.stdout + r.stderr for r in collect))
    assert not any(found.values()), {k: v for k, v in found.items() if v}
