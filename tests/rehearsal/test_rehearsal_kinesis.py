"""The Kinesis deployment rehearsed from the rendered chart (issue 14): no Kafka anywhere. The
rendered collector publishes to the Kinesis stream, the rendered kinesis-worker leases the shards
through Redis and writes flows, HTTP and alerts straight to S3 (Parquet, the sinks' layout) and
CloudWatch; everything as the pods would run it (tests/rehearsal/runner.py), against moto and a
real Redis. The results must equal `mirrorscope analyze` of the capture."""

from __future__ import annotations

import json
from pathlib import Path

from tests.rehearsal.rehearse import Deployment, analyze, chart_values, parquet_rows, wait_for
from tests.rehearsal.runner import require_root
from tests.rehearsal.test_rehearsal_kafka import capture  # noqa: F401  (the same capture)
from tests.services.moto_service import CREDENTIALS
from tests.sink_helpers import client

HERE = Path(__file__).resolve().parent


def test_kinesis_deployment_as_rendered_delivers_what_analyze_finds(redis_db, moto, capture,
                                                                    tmp_path):
    require_root()
    moto.reset()
    values = HERE / "values-kinesis.yaml"
    dep = Deployment.render(values)
    vals = chart_values(values)
    assert set(dep.pods) == {"worker", "collector"}, "a Kinesis stack has no sink Deployments"
    assert dep.pods["worker"].args[0] == "kinesis-worker"

    # What the stack provides: the stream (Terraform's stream module), the bucket, the log group.
    kinesis = client("kinesis", moto)
    stream = vals["stream"]["kinesis"]["streamName"]
    kinesis.create_stream(StreamName=stream, ShardCount=int(vals["stream"]["partitions"]))
    wait_for("the stream is active", lambda: kinesis.describe_stream_summary(StreamName=stream)[
        "StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", 30)
    s3 = client("s3", moto)
    bucket = vals["sinks"]["s3"]["bucket"]
    s3.create_bucket(Bucket=bucket)
    logs = client("logs", moto)
    log_group = vals["sinks"]["cloudwatch"]["logGroup"]
    logs.create_log_group(logGroupName=log_group)

    endpoints = {"MIRRORSCOPE_REDIS_URL": redis_db, "AWS_ENDPOINT_URL": moto.url,
                 "AWS_ACCESS_KEY_ID": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                 "AWS_SECRET_ACCESS_KEY": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
    ref = analyze(capture, tmp_path / "reference")
    try:
        workers = [dep.start("worker", tmp_path, endpoints, replica=i) for i in range(2)]
        for p in workers:
            p.wait_ready(120)
        collector = dep.start("collector", tmp_path, endpoints,
                              extra_args=["--pcap", "/tmp/mirror.pcap"], tmp_files=[capture])
        assert collector.proc.wait(180) == 0, collector.tail()
        published = json.loads(collector.tail(1))["totals"]["published"]
        assert published > 0

        def processed():
            stats = [json.loads(p.get("/readyz")[1] or "{}").get("stats", {}) for p in workers]
            return sum(st.get("packet_records", 0) for st in stats) >= published
        wait_for("the workers processed every published packet", processed, 180)
        # A rollout's SIGTERM: each worker checkpoints, which first makes its results durable.
        for w in workers:
            assert w.stop(90) == 0, w.tail()
    finally:
        dep.stop_all()

    got = {t: parquet_rows(s3, bucket, t) for t in ("flows", "http", "alerts")}
    assert ref["alerts"], "the capture must raise an alert"
    for table, key in (("flows", "flow_id"), ("http", "http_id"), ("alerts", "alert_id")):
        assert {r[key] for r in got[table]} == {r[key] for r in ref[table]}, table
    want = {f["flow_id"]: f for f in ref["flows"]}
    for r in got["flows"]:
        f = want[r["flow_id"]]
        assert (r["packets"], r["bytes"], r["srcaddr"], r["dstport"]) == (
            f["packets"], f["bytes"], f["srcaddr"], f["dstport"])
    cw = client("cloudwatch", moto)
    assert cw.list_metrics(Namespace=vals["sinks"]["cloudwatch"]["namespace"])["Metrics"]
    events = logs.filter_log_events(logGroupName=log_group)["events"]
    for a in ref["alerts"]:
        assert any(a["alert_id"] in e["message"] for e in events), a["alert_id"]
    assert dep.unread_variables() == {}, "rendered settings that no process reads"
