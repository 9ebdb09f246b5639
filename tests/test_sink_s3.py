"""S3 sink against a real moto server (a subprocess on loopback): objects read back with
pyarrow equal the records written, partition paths as specified, SSE always, and an endpoint
outage in the middle of a run loses and duplicates nothing."""

from __future__ import annotations

import collections
import io
import re
import time

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from schemas.records import Alert, FlowRecord, HttpTransaction
from stream_app.core.processor import Results
from stream_app.sinks.batching import (Bounds, alert_kind, default_kinds, flow_kind, http_kind,
                                       partition_of)
from stream_app.sinks.parquet import decode, table_to_records
from stream_app.sinks.s3 import S3Outputs, S3Settings, S3Sink
from tests.sink_helpers import HOUR, T0, client, make_alert, make_flow, make_http

KEY_RE = re.compile(r"^(?:pre/)?(flows|http|alerts)/dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/"
                    r"[A-Za-z0-9._-]+-\d{5}-\d{20}-[0-9a-f]{16}\.(parquet|jsonl\.gz)$")


@pytest.fixture
def s3(moto, monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    moto.reset()
    c = client("s3", moto)
    c.create_bucket(Bucket="records")
    return c


def _settings(moto, tmp_path, **kw) -> S3Settings:
    base = dict(bucket="records", data_dir=tmp_path, endpoint_url=moto.url, region="us-east-1")
    base.update(kw)
    return S3Settings(**base)


def _objects(s3, prefix=""):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="records", Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", ())]
    return keys


def _read(s3, key, typ, fmt="parquet"):
    body = s3.get_object(Bucket="records", Key=key)["Body"].read()
    if fmt == "parquet":
        return table_to_records(pq.read_table(io.BytesIO(body)), typ)
    return decode(body, typ, fmt)


def test_embedded_outputs_roundtrip_partitions_and_sse(s3, moto, tmp_path):
    # three hours, roughly in order: every fifth record up to 4 minutes late
    flows = [make_flow(i, ts=T0 + 300 + 34 * i - (i % 5) * 60) for i in range(1, 301)]
    https = [make_http(i, ts=T0 + 4 * HOUR + i) for i in range(120)]        # the next day
    alerts = [make_alert(i) for i in range(15)]
    kinds = {**default_kinds(), "alerts": alert_kind(Alert)}
    out = S3Outputs(_settings(moto, tmp_path, prefix="pre", bounds=Bounds(max_records=64)), kinds=kinds)
    for i in range(0, 300, 50):
        res = Results(flows=flows[i:i + 50], http=https[i // 50 * 20:(i // 50 + 1) * 20])
        res_alerts = alerts[i // 20:i // 20 + 3] if i < 250 else []
        out.write(type("R", (), {"flows": res.flows, "http": res.http, "alerts": res_alerts})())
    written = out.close()
    assert written["s3_flows"] == "s3://records/pre/flows/"

    keys = _objects(s3)
    assert keys and all(KEY_RE.match(k) for k in keys), keys
    parts = collections.Counter((m.group(1), m.group(2), m.group(3)) for m in map(KEY_RE.match, keys))
    assert {p for p in parts if p[0] == "flows"} == {("flows", "2026-05-28", h) for h in ("20", "21", "22")}
    assert {p for p in parts if p[0] == "http"} == {("http", "2026-05-29", "00")}

    kd = {"flows": flow_kind(), "http": http_kind(), "alerts": alert_kind(Alert)}
    by_key = {k: _read(s3, k, kd[KEY_RE.match(k).group(1)].struct_type) for k in keys}
    got_flows = [r for k in keys if "/flows/" in k for r in by_key[k]]
    got_http = [r for k in keys if "/http/" in k for r in by_key[k]]
    got_alerts = [r for k in keys if "/alerts/" in k for r in by_key[k]]
    assert sorted(got_flows, key=lambda r: r.flow_id) == flows
    assert sorted(got_http, key=lambda r: r.http_id) == https
    sent_alerts = [a for i in range(0, 250, 50) for a in alerts[i // 20:i // 20 + 3]]
    assert sorted(got_alerts, key=lambda r: r.alert_id) == sorted(sent_alerts, key=lambda r: r.alert_id)
    assert len(keys) <= 16  # late records do not cut files at the hour boundaries
    for k in keys:  # each file's records sit in the hour its path names (or <= late_s before)
        kind, dt, hour = KEY_RE.match(k).group(1, 2, 3)
        for r in by_key[k]:
            ts = kd[kind].ts_of(r)
            assert partition_of(ts) == (dt, hour) or partition_of(ts + Bounds().late_s) == (dt, hour)
    for k in keys[::7]:
        head = s3.head_object(Bucket="records", Key=k)
        assert head["ServerSideEncryption"] == "AES256"
        assert int(head["Metadata"]["mirrorscope-records"]) == len(by_key[k])

    # The whole prefix as one Hive-partitioned dataset, as Athena reads it.
    import pyarrow.fs as pafs
    fs = pafs.S3FileSystem(endpoint_override=moto.url, scheme="http", region="us-east-1",
                           access_key="testing", secret_key="testing")
    table = ds.dataset("records/pre/flows", filesystem=fs, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 300
    assert set(table.column("hour").to_pylist()) == {20, 21, 22}

    # Analysing the same input again rewrites the same keys.
    again = S3Outputs(_settings(moto, tmp_path, prefix="pre", bounds=Bounds(max_records=64)), kinds=kinds)
    again.write(Results(flows=flows[:50]))
    again.close()
    assert set(_objects(s3)) == set(keys)


def test_sse_kms_and_gzip_json_lines(s3, moto, tmp_path):
    key_id = client("kms", moto).create_key()["KeyMetadata"]["KeyId"]
    sink = S3Sink(_settings(moto, tmp_path, fmt="jsonl.gz", kms_key_id=key_id))
    recs = [make_http(i) for i in range(10)]
    for off, r in enumerate(recs):
        sink.add(http_kind(), "mirrorscope.http", 0, off, r)
    assert sink.close()
    [k] = _objects(s3)
    assert k.endswith(".jsonl.gz") and KEY_RE.match(k)
    head = s3.head_object(Bucket="records", Key=k)
    assert head["ServerSideEncryption"] == "aws:kms" and key_id in head["SSEKMSKeyId"]
    assert _read(s3, k, HttpTransaction, "jsonl.gz") == recs


def test_endpoint_outage_loses_and_duplicates_nothing(s3, moto, tmp_path):
    """moto is frozen (SIGSTOP: connections hang, state survives) in the middle of a run:
    files go to the spool; the process then 'crashes' (its sink is abandoned with files
    spooled, the last one's offsets uncommitted); a new sink on the same data dir re-sends the
    spool and replays from the last commit, cutting its files elsewhere. Every record ends up
    in S3 exactly once."""
    fast = dict(connect_timeout=0.3, read_timeout=0.5, max_attempts=1, backoff_max_s=0.5)
    recs = [make_flow(i, ts=T0 + i * 10) for i in range(600)]  # spans two hours
    fk = flow_kind()
    commits = [0]  # what the consumer committed, file by file (S3Sink.on_durable)
    a = S3Sink(_settings(moto, tmp_path, bounds=Bounds(max_records=40), **fast),
               on_durable=lambda t, p, o: commits.append(o))
    for off in range(0, 200):
        a.add(fk, "mirrorscope.flows", 0, off, recs[off])
    assert a.spool.pending() == [] and commits[-1] == 200
    moto.pause()
    try:
        t = time.monotonic()
        for off in range(200, 450):
            a.add(fk, "mirrorscope.flows", 0, off, recs[off])
            a.poll()
        assert time.monotonic() - t < 20
        assert a.upload_failures > 0 and len(a.spool.pending()) >= 5
        assert commits[-1] == 440  # spooled = durable = committed
        # The crash, at the worst moment: the last file is spooled, its commit never happened.
        committed = commits[-2]
        del a
    finally:
        moto.resume()
    b = S3Sink(_settings(moto, tmp_path, bounds=Bounds(max_records=33), **fast))  # re-sends the spool
    assert b.spool.pending() == []
    for off in range(committed, 600):
        b.add(fk, "mirrorscope.flows", 0, off, recs[off])
    assert b.close()
    got = [r for k in _objects(s3) for r in _read(s3, k, FlowRecord)]
    counts = collections.Counter(r.flow_id for r in got)
    assert max(counts.values()) == 1, "duplicates"
    assert sorted(got, key=lambda r: r.flow_id) == recs
