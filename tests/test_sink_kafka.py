"""`mirrorscope sink s3` reading real result topics from a real Kafka broker (KRaft, from
tests/services/kafka_service.py) into moto's S3: every record once, offsets committed."""

from __future__ import annotations

import collections
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest

from schemas.records import FlowRecord, HttpTransaction
from stream_app.sinks.parquet import table_to_records
from tests.sink_helpers import client, make_flow, make_http

try:
    from tests.services.kafka_service import LocalKafka, create_topic, jar_dir
except ImportError:  # pragma: no cover
    LocalKafka = None

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kafka():
    if os.environ.get("MIRRORSCOPE_TEST_KAFKA"):
        class Ext:
            bootstrap = os.environ["MIRRORSCOPE_TEST_KAFKA"]
        yield Ext
        return
    if LocalKafka is None or not jar_dir().exists():
        pytest.skip("no Kafka broker: tests/services or the Kafka jars (.ci/setup.sh) are missing")
    with tempfile.TemporaryDirectory() as d:
        k = LocalKafka(Path(d))
        k.start()
        try:
            yield k
        finally:
            k.stop()


def test_sink_s3_command_consumes_the_result_topics(kafka, moto, tmp_path):
    from kafka import KafkaAdminClient, KafkaProducer
    tflows, thttp = f"mirrorscope.flows.{os.getpid()}", f"mirrorscope.http.{os.getpid()}"
    create_topic(kafka.bootstrap, tflows, 3)
    create_topic(kafka.bootstrap, thttp, 2)
    flows = [make_flow(i) for i in range(500)]
    https = [make_http(i) for i in range(200)]
    enc = msgspec.msgpack.Encoder()
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for r in flows:
        p.send(tflows, key=r.flow_id.encode(), value=enc.encode(r))
    for r in https:
        p.send(thttp, key=r.http_id.encode(), value=enc.encode(r))
    p.flush()
    p.close()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "MIRRORSCOPE_S3_BUCKET": "records",
           "MIRRORSCOPE_S3_ENDPOINT_URL": moto.url, "MIRRORSCOPE_DATA_DIR": str(tmp_path),
           "MIRRORSCOPE_KAFKA_BOOTSTRAP": kafka.bootstrap, "MIRRORSCOPE_TOPIC_FLOWS": tflows,
           "MIRRORSCOPE_TOPIC_HTTP": thttp, "MIRRORSCOPE_KAFKA_GROUP": "mirrorscope-sink-s3-test"}
    s3 = client("s3", moto)
    s3.create_bucket(Bucket="records")
    cmd = [sys.executable, "-m", "stream_app.cli", "sink", "s3", "--idle-exit", "4",
           "--max-file-records", "70", "--log-level", "warning"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="records").get("Contents", [])]

    def read(prefix, typ):
        return [x for k in keys if k.startswith(prefix) for x in table_to_records(
            pq.read_table(io.BytesIO(s3.get_object(Bucket="records", Key=k)["Body"].read())), typ)]
    got_f, got_h = read("flows/", FlowRecord), read("http/", HttpTransaction)
    assert sorted(got_f, key=lambda x: x.flow_id) == flows
    assert sorted(got_h, key=lambda x: x.http_id) == https
    assert all(f"/{tflows}-" in k or f"/{thttp}-" in k for k in keys)

    a = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        offs = a.list_group_offsets("mirrorscope-sink-s3-test")["mirrorscope-sink-s3-test"]
    finally:
        a.close()
    per_topic = collections.Counter()
    for tp, om in offs.items():
        per_topic[tp.topic] += om.offset
    assert per_topic == {tflows: 500, thttp: 200}

    # A second run finds everything committed: no new objects.
    r = subprocess.run(cmd[:-4] + ["--idle-exit", "3"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="records")["Contents"]) == sorted(keys)


class Crash(Exception):
    pass


def test_crash_between_upload_and_commit_replays_without_duplicates(kafka, moto, tmp_path, monkeypatch):
    """The consumer dies after a file reached S3 but before its offsets were committed (the
    commit raises); a new consumer in the same group, cutting files elsewhere, replays from the
    last commit. S3 then holds every record exactly once."""
    import threading

    from kafka import KafkaProducer

    from stream_app.cli.sink import KafkaSource, run_s3
    from stream_app.sinks.batching import Bounds, flow_kind
    from stream_app.sinks.s3 import S3Settings, S3Sink

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    topic, group = f"mirrorscope.flows.crash{os.getpid()}", f"sink-crash-{os.getpid()}"
    create_topic(kafka.bootstrap, topic, 2)
    flows = [make_flow(i) for i in range(400)]
    enc = msgspec.msgpack.Encoder()
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for r in flows:
        p.send(topic, key=r.flow_id.encode(), value=enc.encode(r))
    p.flush()
    p.close()
    s3 = client("s3", moto)
    s3.create_bucket(Bucket="crash")
    settings = dict(bucket="crash", data_dir=tmp_path, endpoint_url=moto.url, region="us-east-1")

    class CrashingSource(KafkaSource):
        commits = 0

        def commit(self, offsets):
            if CrashingSource.commits == 5:
                raise Crash()
            CrashingSource.commits += 1
            super().commit(offsets)

    kinds = {topic: flow_kind()}
    sink = S3Sink(S3Settings(**settings, bounds=Bounds(max_records=30)))
    with pytest.raises(Crash):
        run_s3(CrashingSource([topic], group, kafka.bootstrap, on_revoke=sink.revoke), sink, kinds,
               threading.Event(), idle_exit_s=3)
    sink2 = S3Sink(S3Settings(**settings, bounds=Bounds(max_records=47)))
    stats = run_s3(KafkaSource([topic], group, kafka.bootstrap, on_revoke=sink2.revoke), sink2, kinds,
                   threading.Event(), idle_exit_s=3)
    assert stats["records_in"] < 400  # the replay started at the commits, not at the beginning
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="crash").get("Contents", [])]
    got = [x for k in keys for x in table_to_records(
        pq.read_table(io.BytesIO(s3.get_object(Bucket="crash", Key=k)["Body"].read())), FlowRecord)]
    assert max(collections.Counter(r.flow_id for r in got).values()) == 1
    assert sorted(got, key=lambda x: x.flow_id) == flows


def test_sink_cloudwatch_command_counts(kafka, moto):
    import datetime as dt
    from kafka import KafkaProducer
    tflows, thttp = f"mirrorscope.flows.cw{os.getpid()}", f"mirrorscope.http.cw{os.getpid()}"
    create_topic(kafka.bootstrap, tflows, 2)
    create_topic(kafka.bootstrap, thttp, 2)
    flows = [make_flow(i, proto=(6, 17)[i % 2]) for i in range(300)]
    https = [make_http(i, status=(200, 503)[i % 2]) for i in range(100)]
    enc = msgspec.msgpack.Encoder()
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for r in flows:
        p.send(tflows, key=r.flow_id.encode(), value=enc.encode(r))
    for r in https:
        p.send(thttp, key=r.http_id.encode(), value=enc.encode(r))
    p.flush()
    p.close()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "MIRRORSCOPE_CLOUDWATCH_ENDPOINT_URL": moto.url,
           "MIRRORSCOPE_KAFKA_BOOTSTRAP": kafka.bootstrap, "MIRRORSCOPE_TOPIC_FLOWS": tflows,
           "MIRRORSCOPE_TOPIC_HTTP": thttp, "MIRRORSCOPE_KAFKA_GROUP": f"cw-{os.getpid()}",
           "MIRRORSCOPE_CLOUDWATCH_NAMESPACE": "MirrorScopeTest"}
    r = subprocess.run([sys.executable, "-m", "stream_app.cli", "sink", "cloudwatch",
                        "--idle-exit", "3", "--flush-seconds", "1"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cw = client("cloudwatch", moto)
    now = dt.datetime.now(dt.timezone.utc)

    def total(name, dims):
        res = cw.get_metric_statistics(Namespace="MirrorScopeTest", MetricName=name,
                                       Dimensions=[{"Name": k, "Value": v} for k, v in dims],
                                       StartTime=now - dt.timedelta(hours=1),
                                       EndTime=now + dt.timedelta(hours=1), Period=60,
                                       Statistics=["Sum"])
        return sum(x["Sum"] for x in res["Datapoints"])
    assert total("Flows", [("Protocol", "TCP")]) == 150
    assert total("Bytes", [("Protocol", "UDP")]) == sum(f.bytes for f in flows if f.protocol == 17)
    assert total("HttpTransactions", [("StatusClass", "5xx")]) == 50
