"""`mirrorscope analyze --s3-bucket B --cloudwatch`: the real command on the sample capture
writes its records to S3 and CloudWatch (moto's server) as well as to local files."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pyarrow.parquet as pq

from schemas.records import FlowRecord, HttpTransaction
from stream_app.sinks.parquet import table_to_records
from tests.sink_helpers import client

SAMPLE = Path(__file__).resolve().parents[1] / "docs" / "samples" / "mirror-lab-http.pcap"


def test_analyze_writes_to_s3_and_cloudwatch(moto, tmp_path, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_REGION": "us-east-1", "MIRRORSCOPE_S3_ENDPOINT_URL": moto.url,
                 "MIRRORSCOPE_CLOUDWATCH_ENDPOINT_URL": moto.url,
                 "MIRRORSCOPE_CLOUDWATCH_LOG_GROUP": "/mirrorscope/alerts"}.items():
        monkeypatch.setenv(k, v)
    s3 = client("s3", moto)
    s3.create_bucket(Bucket="analyze")
    monkeypatch.setenv("MIRRORSCOPE_S3_PREFIX", "lab/")
    monkeypatch.setenv("MIRRORSCOPE_DATA_DIR", str(tmp_path / "data"))
    exe = Path(sys.executable).with_name("mirrorscope")
    done = subprocess.run([str(exe), "analyze", str(SAMPLE), "--out", str(tmp_path / "out"),
                           "--s3-bucket", "analyze", "--cloudwatch", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["flows"] > 0 and summary["http_transactions"] > 0
    assert "s3_flows" in summary["outputs"] and "cloudwatch_metrics" in summary["outputs"]

    def jsonl(name, typ):
        dec = msgspec.json.Decoder(typ)
        return [dec.decode(x) for x in (tmp_path / "out" / name).read_bytes().splitlines()]

    def s3_records(prefix, typ):
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="analyze", Prefix=prefix)["Contents"]]
        return [r for k in keys for r in table_to_records(
            pq.read_table(io.BytesIO(s3.get_object(Bucket="analyze", Key=k)["Body"].read())), typ)]

    flows, https = jsonl("flows.jsonl", FlowRecord), jsonl("http.jsonl", HttpTransaction)
    key = lambda r: msgspec.json.encode(r)  # noqa: E731
    assert sorted(s3_records("lab/flows/", FlowRecord), key=key) == sorted(flows, key=key)
    assert sorted(s3_records("lab/http/", HttpTransaction), key=key) == sorted(https, key=key)

    cw = client("cloudwatch", moto)
    now = dt.datetime.now(dt.timezone.utc)
    got = cw.get_metric_statistics(Namespace="MirrorScope", MetricName="Flows",
                                   Dimensions=[{"Name": "Protocol", "Value": "TCP"}],
                                   StartTime=now - dt.timedelta(hours=1),
                                   EndTime=now + dt.timedelta(hours=1), Period=60, Statistics=["Sum"])
    assert sum(p["Sum"] for p in got["Datapoints"]) == sum(1 for f in flows if f.protocol == 6)
