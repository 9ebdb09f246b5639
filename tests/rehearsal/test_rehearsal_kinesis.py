"""The Kinesis deployment rehearsed from the rendered chart (issue 14): no Kafka anywhere. The
rendered collector publishes to the Kinesis stream, the rendered kinesis-worker leases the shards
through Redis and writes flows, HTTP and alerts straight to S3 (Parquet, the sinks' layout) and
CloudWatch; everything as the pods would run it (tests/rehearsal/runner.py), against moto and a
real Redis. The results must equal `mirrorscope analyze` of the capture."""

from __future__ import annotations

import json
from pathlib import Path

from tests.rehearsal.rehearse import (Deployment, analyze, assert_delivered, chart_values,
                                      provision_results, wait_for)
from tests.rehearsal.runner import require_root
from tests.rehearsal.test_rehearsal_kafka import capture  # noqa: F401  (the same capture)
from tests.services.moto_service import CREDENTIALS
from tests.sink_helpers import client

HERE = Path(__file__).resolve().parent


def test_kinesis_deployment_as_rendered_delivers_what_analyze_finds(redis_db, moto, capture,  # noqa: F811
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
    log_group = provision_results(moto, vals)

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

    assert_delivered(ref, moto, vals, log_group)
    assert dep.unread_variables() == {}, "rendered settings that no process reads"
