"""Duplicates in S3 after replays (issue 20): a worker that crashes re-publishes the records
made since its last checkpoint at new offsets of the result topic, and the S3 sink stores
them again. The sink's own crash adds no row (a replayed file overwrites its object); the
``<table>_unique`` Athena views (schemas/athena/views/) count each record once.

Real parts: a Kafka broker (KRaft, tests/services/kafka_service.py), moto's S3 server, and
`mirrorscope sink s3` as a process killed with SIGKILL mid-run. Athena itself cannot run
here: the view's own SQL is transpiled by sqlglot and executed by SQLite over the rows read
back from the Parquet objects (the one stand-in)."""

from __future__ import annotations

import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
import sqlglot

from schemas.athena.generate import VIEW_DIR, columns
from schemas.records import FlowRecord
from tests.sink_helpers import client, make_flow

try:
    from tests.services.kafka_service import LocalKafka, create_topic, jar_dir
except ImportError:  # pragma: no cover
    LocalKafka = None

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")]


@pytest.fixture(scope="module")
def kafka():
    if os.environ.get("MIRRORSCOPE_TEST_KAFKA"):
        class Ext:
            bootstrap = os.environ["MIRRORSCOPE_TEST_KAFKA"]
        yield Ext
        return
    assert LocalKafka is not None and jar_dir().exists(), \
        "no Kafka broker: tests/services or the Kafka jars (.ci/setup.sh) are missing"
    with tempfile.TemporaryDirectory() as d:
        k = LocalKafka(Path(d))
        k.start()
        try:
            yield k
        finally:
            k.stop()


def _wait_group_empty(bootstrap: str, group: str, timeout: float = 120.0) -> None:
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout
        while True:
            got = admin.describe_groups([group])
            g = got[group] if isinstance(got, dict) else got[0]
            members = g["members"] if isinstance(g, dict) else g.members
            if not members:
                return
            assert time.monotonic() < deadline, f"group {group} still has {members}"
            time.sleep(0.5)
    finally:
        admin.close()


def _objects(s3) -> list[str]:
    keys, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket="records", Prefix="flows/", **kw)
        keys += [o["Key"] for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            return keys
        token = r["NextContinuationToken"]


def _rows(s3) -> list[dict]:
    out = []
    for key in _objects(s3):
        dt, hour = re.search(r"dt=([^/]+)/hour=([^/]+)/", key).groups()
        table = pq.read_table(io.BytesIO(s3.get_object(Bucket="records", Key=key)["Body"].read()))
        for row in table.to_pylist():
            out.append({**row, "dt": dt, "hour": hour})
    return out


def _run_view(rows: list[dict], table: str = "flows") -> list[tuple]:
    """The Athena view's SQL, transpiled to SQLite, over the rows."""
    db = sqlite3.connect(":memory:")
    db.execute("ATTACH ':memory:' AS mirrorscope")
    cols = [n for n, _ in columns(FlowRecord)] + ["dt", "hour"]
    db.execute(f"CREATE TABLE mirrorscope.{table} ({', '.join(repr(c) for c in cols)})")
    db.executemany(f"INSERT INTO mirrorscope.{table} VALUES ({', '.join('?' * len(cols))})",
                   [[r[c] for c in cols] for r in rows])
    view = sqlglot.parse_one((VIEW_DIR / f"{table}_unique.sql").read_text(), read="trino")
    view.set("replace", False)  # SQLite has no CREATE OR REPLACE VIEW
    db.execute(view.sql(dialect="sqlite"))
    return db.execute(f"SELECT * FROM mirrorscope.{table}_unique").fetchall()


def test_rows_after_a_worker_replay_and_a_sink_kill_equal_distinct_ids(kafka, moto, tmp_path):
    from kafka import KafkaProducer
    topic = f"mirrorscope.flows.dedup.{os.getpid()}"
    create_topic(kafka.bootstrap, topic, 2)
    flows = [make_flow(i) for i in range(2000)]
    replayed = flows[1400:]  # what a worker killed after its checkpoint publishes again
    enc = msgspec.msgpack.Encoder()
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for r in flows + replayed:
        p.send(topic, key=r.flow_id.encode(), value=enc.encode(r))
    p.flush()
    p.close()
    published = len(flows) + len(replayed)

    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "MIRRORSCOPE_S3_BUCKET": "records",
           "MIRRORSCOPE_S3_ENDPOINT_URL": moto.url, "MIRRORSCOPE_DATA_DIR": str(tmp_path),
           "MIRRORSCOPE_KAFKA_BOOTSTRAP": kafka.bootstrap, "MIRRORSCOPE_TOPIC_FLOWS": topic,
           "MIRRORSCOPE_TOPIC_HTTP": topic + ".none", "MIRRORSCOPE_TOPIC_ALERTS": topic + ".none",
           "MIRRORSCOPE_KAFKA_GROUP": f"sink-dedup-{os.getpid()}"}
    s3 = client("s3", moto)
    s3.create_bucket(Bucket="records")
    cmd = [sys.executable, "-m", "stream_app.cli", "sink", "s3", "--max-file-records", "25",
           "--log-level", "warning"]

    # First run: SIGKILL once some files are in S3 and others are not yet.
    first = subprocess.Popen(cmd + ["--idle-exit", "60"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while len(_objects(s3)) < 10:
        assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()[-3000:]
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    at_kill = len(_rows(s3))
    assert at_kill < published  # killed mid-run

    # Second run: from the committed offsets to the end, once the group has dropped the
    # killed member (its session times out); until then nothing would be assigned to it.
    _wait_group_empty(kafka.bootstrap, env["MIRRORSCOPE_KAFKA_GROUP"])
    r = subprocess.run(cmd + ["--idle-exit", "8"], env=env, capture_output=True, text=True,
                       timeout=180)
    assert '"records_in": 0' not in r.stdout, r.stdout
    assert r.returncode == 0, r.stderr[-3000:]

    rows = _rows(s3)
    ids = {row["flow_id"] for row in rows}
    assert ids == {f.flow_id for f in flows}
    # The sink's crash added nothing: every published record is one row, no more ...
    assert len(rows) == published
    # ... and the worker's replay is what the table holds twice; the view holds it once.
    unique = _run_view(rows)
    assert len(unique) == len(ids) == len(flows)
    cols = [n for n, _ in columns(FlowRecord)]
    got = sorted((dict(zip(cols, u)) for u in unique), key=lambda d: d["flow_id"])
    want = sorted((msgspec.to_builtins(f) for f in flows), key=lambda d: d["flow_id"])
    assert [{k: g[k] for k in ("flow_id", "packets", "bytes", "srcaddr")} for g in got] == \
        [{k: w[k] for k in ("flow_id", "packets", "bytes", "srcaddr")} for w in want]


def test_views_resolve_against_their_tables():
    """Every view parses as Trino SQL (Athena's view dialect), reads only its table's columns
    and partitions, and lists them all, in the table's order."""
    from sqlglot import exp
    from sqlglot.optimizer.qualify import qualify

    from schemas.athena.generate import ID_COLUMNS, tables
    for name, (typ, _) in tables().items():
        cols = [n for n, _ in columns(typ)] + ["dt", "hour"]
        view = sqlglot.parse_one((VIEW_DIR / f"{name}_unique.sql").read_text(), read="trino")
        query = view.expression
        qualify(query, schema={"mirrorscope": {name: {c: "string" for c in cols}}},
                dialect="trino", validate_qualify_columns=True)
        assert query.named_selects == cols
        assert {t.name for t in query.find_all(exp.Table)} == {name}
        window = next(query.find_all(exp.Window))
        assert [c.name for c in window.args["partition_by"]] == [ID_COLUMNS[name]]
