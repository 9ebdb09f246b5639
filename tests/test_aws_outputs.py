"""AwsOutputs (stream_app/runtime/aws_outputs.py) in process against a real moto server:
object names depend only on the shard and the file's first record (a replay overwrites the
file a crash interrupted), files cut early by the sink's bounds are uploaded before the flush
and awaited by it, a failed PUT fails the flush and keeps CloudWatch from counting the same
records at every retry, and a forgotten shard's records are dropped (its next owner makes
them again)."""

from __future__ import annotations

import asyncio
import datetime as _dt
import uuid

import pytest

from schemas.records import FlowRecord
from stream_app.adapters.kinesis import ShardTP
from stream_app.core.processor import Results
from stream_app.runtime.aws_outputs import AwsOutputs, partition_number
from stream_app.runtime.outputs import OutputError
from stream_app.sinks.batching import Bounds
from stream_app.sinks.cloudwatch import CloudWatchSettings
from stream_app.sinks.parquet import decode_parquet
from stream_app.sinks.s3 import S3Settings
from tests.sink_helpers import client, make_alert, make_flow, make_http

SHARD = ShardTP("stream", "shardId-000000000003")


@pytest.fixture
def aws(moto, monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    client("s3", moto).create_bucket(Bucket=bucket)
    group = f"/alerts/{uuid.uuid4().hex[:6]}"
    client("logs", moto).create_log_group(logGroupName=group)
    return bucket, group


def outputs(moto, bucket, group=None, bounds=Bounds(), fast=False, namespace=None):
    net = dict(connect_timeout=1, read_timeout=1, max_attempts=1) if fast else {}
    s3 = S3Settings(bucket=bucket, prefix="p/", endpoint_url=moto.url, region="us-east-1",
                    bounds=bounds, **net)
    cw = None
    if group:
        cw = CloudWatchSettings(namespace=namespace or "NS", log_group=group, log_stream="w",
                                endpoint_url=moto.url, region="us-east-1", **net)
    return AwsOutputs("stream", s3, cw)


def objects(moto, bucket) -> dict[str, list]:
    s3 = client("s3", moto)
    out = {}
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        out[o["Key"]] = decode_parquet(body, FlowRecord) if "/flows/" in o["Key"] else body
    return out


def test_partition_number():
    assert partition_number(SHARD) == 3
    assert partition_number(7) == 7
    with pytest.raises(ValueError):
        partition_number("no-digits-here-x")


def test_a_replay_overwrites_the_file_the_crash_interrupted(moto, aws):
    bucket, _ = aws
    flows = [make_flow(i) for i in range(30)]

    async def run():
        a = outputs(moto, bucket)
        await a.publish(SHARD, Results(flows=flows[:10]))
        await a.flush(SHARD)  # then a snapshot after flows[9]
        await a.publish(SHARD, Results(flows=flows[10:25]))
        await a.flush(SHARD)  # ... and the crash before that snapshot
        # The replay from the snapshot makes flows[10:] again, cut elsewhere.
        b = outputs(moto, bucket)
        await b.publish(SHARD, Results(flows=flows[10:18]))
        await b.flush(SHARD)
        await b.publish(SHARD, Results(flows=flows[18:30]))
        await b.flush(SHARD)
    asyncio.run(run())
    got = objects(moto, bucket)
    # 3 objects, not 4: the replay's first file (flows 10-17) has the interrupted file's
    # first record, so its name, and replaced it (flows 10-24); 18-29 are in the next file.
    assert sorted(len(v) for v in got.values()) == [8, 10, 12]
    assert all(k.startswith("p/flows/dt=") and "/stream-00003-" in k for k in got)
    rows = [r for recs in got.values() for r in recs]
    assert {r.flow_id for r in rows} == {f.flow_id for f in flows}
    by_id = {}
    for r in rows:
        assert by_id.setdefault(r.flow_id, r) == r
    assert sorted(by_id.values(), key=lambda r: r.flow_id) == flows


def test_files_cut_early_are_uploaded_and_awaited_by_the_flush(moto, aws):
    bucket, _ = aws
    flows = [make_flow(i) for i in range(25)]

    async def run():
        a = outputs(moto, bucket, bounds=Bounds(max_records=10))
        await a.publish(SHARD, Results(flows=flows))
        assert len(a._parts[SHARD].uploads) == 2  # two full files already on their way
        await a.flush(SHARD)
        return a.stats
    stats = asyncio.run(run())
    got = objects(moto, bucket)
    assert sorted(len(v) for v in got.values()) == [5, 10, 10]
    assert stats["output_files"] == 3 and stats["output_records"] == 25


def test_a_failed_put_fails_the_flush_and_sends_nothing_to_cloudwatch(moto, aws):
    bucket, group = aws
    ns = f"NS{uuid.uuid4().hex[:6]}"

    async def run():
        a = outputs(moto, bucket, group, fast=True, namespace=ns)
        a.check()
        a.s3.bucket = "no-such-bucket"  # every PUT fails (NoSuchBucket)
        await a.publish(SHARD, Results(flows=[make_flow(1)], alerts=[make_alert(1)]))
        with pytest.raises(OutputError, match="no-such-bucket"):
            await a.flush(SHARD)
        await a.flush(SHARD)  # what failed is gone: the shard makes it again on replay
        a.s3.bucket = bucket
        await a.publish(SHARD, Results(flows=[make_flow(2)], http=[make_http(2)],
                                       alerts=[make_alert(2)]))
        await a.flush(SHARD)
        return a.stats
    stats = asyncio.run(run())
    # (a flows file and an alerts file)
    assert stats["output_put_failures"] == 2 and stats["output_flush_failures"] == 1
    cw = client("cloudwatch", moto)
    now = _dt.datetime.now(_dt.timezone.utc)
    r = cw.get_metric_statistics(Namespace=ns, MetricName="Flows", Dimensions=[
        {"Name": "Protocol", "Value": "TCP"}], StartTime=now - _dt.timedelta(hours=1),
        EndTime=now + _dt.timedelta(hours=1), Period=60, Statistics=["Sum"])
    assert sum(p["Sum"] for p in r["Datapoints"]) == 1  # the failed flush's flow not counted
    events = client("logs", moto).get_log_events(logGroupName=group, logStreamName="w",
                                                 startFromHead=True)["events"]
    assert ['"alert-000002"' in e["message"] for e in events] == [True]


def test_forget_drops_the_shards_pending_records(moto, aws):
    bucket, _ = aws

    async def run():
        a = outputs(moto, bucket)
        await a.publish(SHARD, Results(flows=[make_flow(1)]))
        a.forget(SHARD)
        await a.flush(SHARD)
    asyncio.run(run())
    assert objects(moto, bucket) == {}
