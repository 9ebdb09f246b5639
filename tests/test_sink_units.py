"""The sinks' pure parts: encoding, batching and naming, the spool, metric and log-event
batching, and the consumer loop against an in-memory source (no I/O beyond tmp_path)."""

from __future__ import annotations

import collections
import threading

import msgspec
import pyarrow as pa
import pytest

from schemas.records import Alert, FlowRecord, HttpTransaction
from stream_app.cli.sink import Message, run_cloudwatch, run_s3
from stream_app.sinks import cloudwatch as cw
from stream_app.sinks.batching import (Batcher, Bounds, alert_kind, flow_kind, http_kind,
                                       object_key, partition_of)
from stream_app.sinks.parquet import arrow_schema, decode, encode
from stream_app.sinks.s3 import S3Settings, S3Sink, sse_args
from stream_app.sinks.spool import Spool
from tests.sink_helpers import HOUR, T0, make_alert, make_flow, make_http


# --- encoding ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "jsonl.gz"])
def test_roundtrip_every_record_type(fmt):
    for typ, recs in ((FlowRecord, [make_flow(i) for i in range(50)]),
                      (HttpTransaction, [make_http(i, status=None if i % 9 == 0 else 200 + i) for i in range(50)]),
                      (Alert, [make_alert(i) for i in range(20)])):
        assert decode(encode(recs, typ, fmt), typ, fmt) == recs


def test_arrow_schema_follows_the_struct():
    s = arrow_schema(FlowRecord)
    assert s.names == [f.name for f in msgspec.structs.fields(FlowRecord)]
    assert s.field("bytes").type == pa.int64() and s.field("duration").type == pa.float64()
    assert s.field("end_reason").type == pa.string()  # a Literal
    assert all(f.nullable for f in s)
    h = arrow_schema(HttpTransaction)
    assert h.field("tags").type == pa.list_(pa.string())
    assert arrow_schema(Alert).field("evidence").type == pa.map_(pa.string(), pa.int64())


def test_encoding_is_deterministic():
    recs = [make_flow(i) for i in range(10)]
    for fmt in ("parquet", "jsonl.gz"):
        assert encode(recs, FlowRecord, fmt) == encode(recs, FlowRecord, fmt)


# --- batching and naming ---------------------------------------------------------------------

def test_partition_and_key():
    assert partition_of(T0) == ("2026-05-28", "20")
    assert partition_of(T0 + HOUR - 1) == ("2026-05-28", "20")
    assert partition_of(T0 + 4 * HOUR) == ("2026-05-29", "00")
    k = object_key("pre", "flows", "2026-05-28", "20", "mirrorscope.flows", 3, 17, "1:a/b+=", "parquet")
    assert k.startswith("pre/flows/dt=2026-05-28/hour=20/mirrorscope.flows-00003-00000000000000000017-")
    assert k.endswith(".parquet") and "/" not in k.rsplit("/", 1)[1]


def test_hour_change_and_size_cut_files_and_keep_ranges_contiguous():
    b = Batcher(Bounds(max_records=3, max_age_s=1e9))
    fk = flow_kind()
    out = []
    ts = [T0 + 1, T0 + 2, T0 + HOUR + 1, T0 + HOUR + 2, T0 + HOUR + 3, T0 + HOUR + 4, T0 + HOUR + 5]
    for off, t in enumerate(ts):
        out += b.add(fk, "t", 0, 100 + off, make_flow(off, t), now=0)
    assert [(c.hour, c.first_offset, c.last_offset) for c in out] == [("20", 100, 101), ("21", 102, 104)]
    assert b.open_first_offsets() == {("t", 0): 105}
    assert b.poll(now=10) == []
    rest = b.flush()
    assert [(c.first_offset, c.last_offset) for c in rest] == [(105, 106)]


def test_late_records_join_the_open_file_within_the_tolerance():
    b = Batcher(Bounds(late_s=600, max_age_s=1e9))
    fk = flow_kind()
    out = []
    ts = [T0 - 5, T0 + 3, T0 - 20, T0 + 7, T0 - 599, T0 + 9, T0 - 601, T0 + 11]
    for off, t in enumerate(ts):
        out += b.add(fk, "t", 0, off, make_flow(off, t), now=0)
    out += b.flush()
    # 19:59:55 opens an hour-19 file; 20:00:03 cuts it; the late ones up to 600 s join hour 20
    # (19:49:59, 601 s late, cuts once more)
    assert [(c.hour, c.first_offset, c.last_offset) for c in out] == [
        ("19", 0, 0), ("20", 1, 5), ("19", 6, 6), ("20", 7, 7)]


def test_memory_bound_closes_the_largest_open_file():
    one = len(msgspec.json.encode(make_flow(0)))
    b = Batcher(Bounds(max_pending_bytes=10 * one, max_age_s=1e9))
    out = []
    for off in range(6):
        out += b.add(flow_kind(), "t", 0, off, make_flow(0), now=0)
    for off in range(5):
        out += b.add(flow_kind(), "t", 1, off, make_flow(0), now=0)
    assert [(c.partition, len(c.records)) for c in out] == [(0, 6)]
    assert b.pending_bytes == 5 * one
    assert b.pending_records == 5


def test_age_bound():
    b = Batcher(Bounds(max_age_s=5))
    b.add(http_kind(), "t", 1, 0, make_http(0), now=100)
    assert b.poll(now=104) == []
    assert len(b.poll(now=105)) == 1


def test_alert_kind_needs_the_alert_fields():
    assert alert_kind(Alert).id_field == "alert_id"

    class NotAnAlert(msgspec.Struct):
        ts: float

    with pytest.raises(TypeError):
        alert_kind(NotAnAlert)


# --- spool ---------------------------------------------------------------------------------

def test_spool_bound_replace_and_recovery(tmp_path):
    sp = Spool(tmp_path, max_bytes=100)
    assert sp.put("a", b"x" * 60, {"m": "1"}, records=3)
    assert sp.put("a", b"y" * 70, {"m": "2"}, records=3)  # same key replaces
    assert sp.bytes == 70
    assert not sp.put("b", b"z" * 40, {}, records=5)
    assert (sp.dropped_files, sp.dropped_records) == (1, 5)
    (tmp_path / "junk.tmp").write_bytes(b"half")
    again = Spool(tmp_path, max_bytes=100)  # a restart finds the leftovers
    [e] = again.pending()
    assert (e.key, e.metadata, e.read()) == ("a", {"m": "2"}, b"y" * 70)
    again.remove(e)
    assert again.bytes == 0 and again.pending() == []
    assert not (tmp_path / "junk.tmp").exists()


# --- S3 sink against an in-memory client ------------------------------------------------------

class FakeS3:
    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.down = False

    def put_object(self, **kw):
        if self.down:
            raise ConnectionError("endpoint unreachable")
        self.objects[kw["Key"]] = kw


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _read_all(fake: FakeS3, typ, fmt="parquet"):
    return [r for o in fake.objects.values() for r in decode(o["Body"], typ, fmt)]


def test_sse_arguments():
    assert sse_args(None) == {"ServerSideEncryption": "AES256"}
    assert sse_args("alias/k") == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/k",
                                 "BucketKeyEnabled": True}


def test_replay_after_crash_overwrites_even_when_files_are_cut_elsewhere(tmp_path):
    """The sink crashes after a file is durable but before its offsets are committed; the
    replay cuts its files at other places (a wall-clock flush) and still duplicates nothing."""
    fake = FakeS3()
    recs = [make_flow(i) for i in range(100)]
    fk = flow_kind()
    a = S3Sink(S3Settings(bucket="b", data_dir=tmp_path, bounds=Bounds(max_records=30)), client=fake)
    for off, r in enumerate(recs[:70]):
        a.add(fk, "mirrorscope.flows", 0, off, r)
    committed = 30  # the crash: offsets 30..59 are in S3 but were never committed
    assert a.committable()[("mirrorscope.flows", 0)] == 60
    clock = Clock()
    b = S3Sink(S3Settings(bucket="b", data_dir=tmp_path, bounds=Bounds(max_records=45, max_age_s=5)),
               client=fake, clock=clock)
    for off in range(committed, 100):
        b.add(fk, "mirrorscope.flows", 0, off, recs[off])
        if off == 40:
            clock.t = 10
            b.poll()  # the time bound closes [30, 40]
    b.close()
    got = _read_all(fake, FlowRecord)
    assert sorted(got, key=lambda r: r.flow_id) == recs


def test_outage_spools_then_sends_everything_once(tmp_path):
    fake = FakeS3()
    clock = Clock()
    s = S3Sink(S3Settings(bucket="b", data_dir=tmp_path, bounds=Bounds(max_records=10)),
               client=fake, clock=clock)
    hk = http_kind()
    recs = [make_http(i) for i in range(95)]
    for off, r in enumerate(recs):
        fake.down = 20 <= off < 70
        clock.t += 1
        s.add(hk, "mirrorscope.http", 2, off, r)
    assert s.upload_failures > 0
    assert s.committable() == {("mirrorscope.http", 2): 90}  # durable in the spool
    assert s.close(timeout=0)
    assert sorted(_read_all(fake, HttpTransaction), key=lambda r: r.http_id) == recs
    assert s.spool.pending() == []


def test_full_spool_during_outage_counts_drops(tmp_path):
    fake = FakeS3()
    fake.down = True
    s = S3Sink(S3Settings(bucket="b", data_dir=tmp_path, spool_max_bytes=1,
                          bounds=Bounds(max_records=5)), client=fake)
    for off in range(20):
        s.add(flow_kind(), "t", 0, off, make_flow(off))
    assert s.spool.dropped_files == 4 and s.spool.dropped_records == 20


# --- the consumer loops -------------------------------------------------------------------

class FakeSource:
    """An in-memory topic source with Kafka's poll/commit shape."""

    def __init__(self, messages: list[Message], per_poll: int = 7):
        self.pending = collections.deque(messages)
        self.per_poll = per_poll
        self.commits: list[dict] = []
        self.closed = False

    def poll(self, timeout_s):
        return [self.pending.popleft() for _ in range(min(self.per_poll, len(self.pending)))]

    def commit(self, offsets):
        self.commits.append(dict(offsets))

    def close(self):
        self.closed = True


def _messages(topic, recs, partitions=2):
    enc = msgspec.msgpack.Encoder()
    return [Message(topic, i % partitions, i // partitions, enc.encode(r)) for i, r in enumerate(recs)]


def test_run_s3_commits_only_durable_offsets(tmp_path):
    fake = FakeS3()
    flows = [make_flow(i) for i in range(40)]
    https = [make_http(i) for i in range(30)]
    msgs = _messages("mirrorscope.flows", flows) + _messages("mirrorscope.http", https)
    msgs.insert(5, Message("mirrorscope.http", 0, 999, b"\xc1 not msgpack"))
    src = FakeSource(msgs)
    sink = S3Sink(S3Settings(bucket="b", data_dir=tmp_path, bounds=Bounds(max_records=8)), client=fake)
    kinds = {"mirrorscope.flows": flow_kind(), "mirrorscope.http": http_kind()}
    stats = run_s3(src, sink, kinds, threading.Event(), poll_s=0, idle_exit_s=0.05)
    assert stats["undecodable"] == 1 and src.closed
    by_type = collections.defaultdict(list)
    for o in fake.objects.values():
        by_type[o["Key"].split("/")[0]].append(o)
    assert sorted([r for o in by_type["flows"] for r in decode(o["Body"], FlowRecord, "parquet")],
                  key=lambda r: r.flow_id) == flows
    assert sorted([r for o in by_type["http"] for r in decode(o["Body"], HttpTransaction, "parquet")],
                  key=lambda r: r.http_id) == https
    # every commit covered only what was in S3 by then; the last one covers everything
    assert src.commits[-1] == {("mirrorscope.flows", 0): 20, ("mirrorscope.flows", 1): 20,
                               ("mirrorscope.http", 0): 15, ("mirrorscope.http", 1): 15}


def test_run_cloudwatch_counts():
    class FakeCW:
        def __init__(self):
            self.calls = []

        def put_metric_data(self, **kw):
            self.calls.append(kw)

    fakecw = FakeCW()
    sink = cw.CloudWatchSink(cw.CloudWatchSettings(log_group=None), cw_client=fakecw, logs_client=object())
    flows = [make_flow(i, proto=(6, 17, 1, 47)[i % 4]) for i in range(40)]
    src = FakeSource(_messages("mirrorscope.flows", flows))
    run_cloudwatch(src, sink, {"mirrorscope.flows": flow_kind()}, threading.Event(), poll_s=0, idle_exit_s=0.05)
    datums = [d for c in fakecw.calls for d in c["MetricData"]]
    total = {d["MetricName"]: d["Value"] for d in datums if "Dimensions" not in d}
    assert total == {"Flows": 40, "Packets": sum(f.packets for f in flows), "Bytes": sum(f.bytes for f in flows)}
    by_proto = {d["Dimensions"][0]["Value"]: d["Value"] for d in datums
                if d["MetricName"] == "Flows" and "Dimensions" in d}
    assert by_proto == {"TCP": 10, "UDP": 10, "ICMP": 10, "Other": 10}
    assert src.commits[-1] == {("mirrorscope.flows", 0): 20, ("mirrorscope.flows", 1): 20}


# --- CloudWatch payloads ----------------------------------------------------------------------

def test_metric_dimensions_are_bounded():
    agg = cw.MetricAggregator(max_alert_types=3)
    agg.add_alerts([make_alert(i, type_=f"t{i}", severity=("high", "LOW", "weird")[i % 3]) for i in range(10)])
    agg.add_http([make_http(i, status=s) for i, s in enumerate([200, 204, 301, 404, 503, None, 999])])
    datums = agg.take(0.0)
    dims = {(d["MetricName"], x["Name"], x["Value"]) for d in datums for x in d.get("Dimensions", ())}
    assert {v for m, n, v in dims if n == "Type"} == {"t0", "t1", "t2", "Other"}
    assert {v for m, n, v in dims if n == "Severity"} == {"high", "low", "Other"}
    assert {v for m, n, v in dims if n == "StatusClass"} == {"2xx", "3xx", "4xx", "5xx", "None"}
    assert not agg


def test_metric_batches_respect_the_limits():
    datums = [{"MetricName": "M", "Value": 1.0, "Unit": "Count", "Timestamp": 0,
               "Dimensions": [{"Name": "Type", "Value": str(i)}]} for i in range(2500)]
    batches = cw.metric_batches(datums)
    assert [len(b) for b in batches] == [1000, 1000, 500]


def test_log_event_batches_respect_the_limits():
    now = 1_800_000_000_000
    events = [{"timestamp": now - i, "message": "x" * 200} for i in range(12_000)]
    batches = cw.log_event_batches(events)
    assert sum(map(len, batches)) == 12_000
    for b in batches:
        assert len(b) <= cw.MAX_EVENTS_PER_CALL
        assert sum(len(e["message"]) + 26 for e in b) <= cw.MAX_LOG_BATCH_BYTES
        assert [e["timestamp"] for e in b] == sorted(e["timestamp"] for e in b)
    spread = [{"timestamp": now + h * 3600_000, "message": "m"} for h in (0, 1, 30)]
    assert [len(b) for b in cw.log_event_batches(spread)] == [2, 1]


def test_alert_event_time_is_clamped_and_the_record_kept():
    now_ms = 1_800_000_000_000
    old = make_alert(1, ts=1_000_000_000.5)
    e = cw.alert_event(old, now_ms)
    assert now_ms - e["timestamp"] < cw.MAX_EVENT_AGE_MS
    assert msgspec.json.decode(e["message"], type=Alert) == old
