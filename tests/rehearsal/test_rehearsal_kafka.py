"""The Kafka deployment rehearsed from the rendered chart (issue 14): every workload the chart
renders runs as its pod would (command, args, environment, mounted config, user, read-only root),
against a real Kafka broker, a real Redis and moto; only endpoints, pod-local ports and injected
credentials come from the test. A capture replayed through the rendered collector must land in
the results bucket as Parquet equal to `mirrorscope analyze` of the same capture, with CloudWatch
metrics and alert log events; a rendered setting no process reads fails the rehearsal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.rehearsal.rehearse import (Deployment, analyze, chart_values, group_lag, parquet_rows,
                                      wait_for)
from tests.rehearsal.runner import require_root
from tests.services.fixtures import kafka_broker  # noqa: F401
from tests.services.kafka_service import create_topic
from tests.services.moto_service import CREDENTIALS
from tests.services.traffic import capture_of, tcp_flows, write_pcap
from tests.sink_helpers import client
from tests.test_worker_kafka import scan

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """HTTP conversations with a port scan in the middle: flows, transactions and an alert."""
    grams = tcp_flows(120, seed=5)
    mid = len(grams) // 2
    p = tmp_path_factory.mktemp("rehearsal-capture") / "mirror.pcap"
    write_pcap(p, capture_of(grams[:mid] + scan() + grams[mid:]), step_ns=20_000_000)
    return p


def test_kafka_deployment_as_rendered_delivers_what_analyze_finds(kafka_broker, redis_db, moto,
                                                                  capture, tmp_path):
    require_root()
    values = HERE / "values-kafka.yaml"
    dep = Deployment.render(values)
    vals = chart_values(values)
    assert set(dep.pods) == {"worker", "sink-s3", "sink-cloudwatch", "collector"}
    w = dep.pods["worker"].env
    assert dep.pods["worker"].args[0] == "worker" and dep.pods["collector"].args[0] == "collect"
    assert dep.pods["worker"].run_as_user == 10001 and dep.pods["worker"].read_only_root

    # What the stack provides before the chart: the topics (MSK creates them on first use with
    # the stack's partition count) and the results bucket (Terraform's storage module).
    parts = int(vals["stream"]["partitions"])
    topics = [vals["stream"]["topics"][k] for k in ("packets", "flows", "http", "alerts")]
    for t in topics:
        create_topic(kafka_broker.bootstrap, t, parts)
    s3 = client("s3", moto)
    bucket = vals["sinks"]["s3"]["bucket"]
    s3.create_bucket(Bucket=bucket)
    # ... and the alert log group (Terraform's alarms module).
    logs = client("logs", moto)
    log_group = vals["sinks"]["cloudwatch"]["logGroup"]
    logs.create_log_group(logGroupName=log_group)

    endpoints = {"MIRRORSCOPE_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
                 "MIRRORSCOPE_REDIS_URL": redis_db, "AWS_ENDPOINT_URL": moto.url,
                 "AWS_ACCESS_KEY_ID": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                 "AWS_SECRET_ACCESS_KEY": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
    try:
        workers = [dep.start("worker", tmp_path, endpoints, replica=i) for i in range(2)]
        sinks = [dep.start(name, tmp_path, endpoints) for name in ("sink-s3", "sink-cloudwatch")]
        for p in workers + sinks:
            p.wait_ready(120)
        # The capture is replayed through the rendered collector: its config and environment,
        # with --pcap instead of the UDP socket (the file placed in its /tmp).
        collector = dep.start("collector", tmp_path, endpoints, extra_args=["--pcap", "/tmp/mirror.pcap"],
                              tmp_files=[capture])
        assert collector.proc.wait(180) == 0, collector.tail()

        sink_groups = [f'{vals["stream"]["kafka"]["consumerGroup"]}-{n}' for n in ("sink-s3", "sink-cloudwatch")]
        published = json.loads(collector.tail(1))["totals"]["published"]

        def processed():
            stats = [json.loads(p.get("/readyz")[1] or "{}").get("stats", {}) for p in workers]
            return sum(st.get("packet_records", 0) for st in stats) >= published
        wait_for("the workers processed every published packet", processed, 180)
        ref = analyze(capture, tmp_path / "reference")
        n_results = len(ref["flows"]) + len(ref["http"]) + len(ref["alerts"])
        from tests.services.kafka_service import consume_all
        wait_for("every result published",
                 lambda: sum(len(consume_all(kafka_broker.bootstrap, t, timeout=5, idle=0.5))
                             for t in topics[1:]) >= n_results, 120, every=2)
        # A rollout's SIGTERM: the sinks flush what they hold and commit, then exit cleanly.
        for s in sinks:
            assert s.stop(90) == 0, s.tail()
        for g in sink_groups:
            assert group_lag(kafka_broker.bootstrap, g, topics[1:]) == 0, g
    finally:
        dep.stop_all()

    got = {t: parquet_rows(s3, bucket, t) for t in ("flows", "http", "alerts")}
    assert ref["alerts"], "the capture must raise an alert"
    for table, key in (("flows", "flow_id"), ("http", "http_id"), ("alerts", "alert_id")):
        want = {r[key]: r for r in ref[table]}
        have = {r[key]: r for r in got[table]}
        assert set(have) == set(want), table
    for r in got["flows"]:
        f = {x["flow_id"]: x for x in ref["flows"]}[r["flow_id"]]
        assert (r["packets"], r["bytes"], r["srcaddr"], r["dstport"]) == (
            f["packets"], f["bytes"], f["srcaddr"], f["dstport"])

    cw = client("cloudwatch", moto)
    ns = vals["sinks"]["cloudwatch"]["namespace"]
    assert cw.list_metrics(Namespace=ns)["Metrics"], "no CloudWatch metrics"
    events = logs.filter_log_events(logGroupName=log_group)["events"]
    assert {a["alert_id"] for a in ref["alerts"]} <= {e["message"] for e in events} or all(
        any(a["alert_id"] in e["message"] for e in events) for a in ref["alerts"])

    assert dep.unread_variables() == {}, "rendered settings that no process reads"
