"""The Kafka deployments rehearsed from the rendered chart (issue 14): every workload the chart
renders runs as its pod would (command, args, environment, mounted config, user, read-only root),
against a real Kafka broker, a real Redis and moto; only endpoints, pod-local ports, the trust
anchor and injected credentials come from the test. A capture replayed through the rendered
collector must land in the results bucket as Parquet equal to `mirrorscope analyze` of the same
capture, with CloudWatch metrics and alert log events; a rendered setting no process reads fails
the rehearsal. Two stacks: plain Kafka, and MSK's IAM authentication (SASL/OAUTHBEARER over TLS,
tokens checked by the broker: tests/services/kafka_sasl.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from schemas.kinds import NAMES
from tests.rehearsal.rehearse import (Deployment, analyze, assert_delivered, chart_values,
                                      group_lag, provision_results, wait_for)
from tests.rehearsal.runner import require_root
from tests.services.fixtures import kafka_broker  # noqa: F401
from tests.services.kafka_sasl import ACCESS_KEY, SECRET_KEY, SecureKafka
from tests.services.kafka_service import consume_all, create_topic
from tests.services.moto_service import CREDENTIALS
from tests.services.traffic import capture_of, tcp_flows, write_pcap
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


@pytest.fixture(scope="module")
def msk_broker(tmp_path_factory):
    k = SecureKafka(tmp_path_factory.mktemp("msk-like-kafka"))
    k.start()
    yield k
    k.stop()


def rehearse(values: Path, admin_bootstrap: str, endpoints: dict, redis_url: str, moto, capture,
             workdir: Path, files: list[Path] = ()) -> Deployment:
    require_root()
    moto.reset()  # each rehearsal is a new stack
    dep = Deployment.render(values)
    vals = chart_values(values)
    assert set(dep.pods) == {"worker", "sink-s3", "sink-cloudwatch", "collector"}
    assert dep.pods["worker"].args[0] == "worker" and dep.pods["collector"].args[0] == "collect"
    assert dep.pods["worker"].run_as_user == 10001 and dep.pods["worker"].read_only_root

    # What the stack provides before the chart: the topics (MSK creates them on first use with
    # the stack's partition count), the results bucket and the alert log group.
    parts = int(vals["stream"]["partitions"])
    topics = [vals["stream"]["topics"][k] for k in ("packets", *NAMES)]
    for t in topics:
        create_topic(admin_bootstrap, t, parts)
    log_group = provision_results(moto, vals)

    endpoints = {"MIRRORSCOPE_REDIS_URL": redis_url, "AWS_ENDPOINT_URL": moto.url, **endpoints}
    try:
        workers = [dep.start("worker", workdir, endpoints, replica=i, tmp_files=files)
                   for i in range(2)]
        sinks = [dep.start(name, workdir, endpoints, tmp_files=files)
                 for name in ("sink-s3", "sink-cloudwatch")]
        for p in workers + sinks:
            p.wait_ready(120)
        # The capture is replayed through the rendered collector: its config and environment,
        # with --pcap instead of the UDP socket (the file placed in its /tmp).
        collector = dep.start("collector", workdir, endpoints,
                              extra_args=["--pcap", "/tmp/mirror.pcap"],
                              tmp_files=[capture, *files])
        assert collector.proc.wait(180) == 0, collector.tail()
        published = json.loads(collector.tail(1))["totals"]["published"]
        assert published > 0

        def processed():
            stats = [json.loads(p.get("/readyz")[1] or "{}").get("stats", {}) for p in workers]
            return sum(st.get("packet_records", 0) for st in stats) >= published
        wait_for("the workers processed every published packet", processed, 180)

        ref = analyze(capture, workdir / "reference")
        n_results = sum(len(ref[k]) for k in NAMES)
        wait_for("every result published",
                 lambda: sum(len(consume_all(admin_bootstrap, t, timeout=5, idle=0.5))
                             for t in topics[1:]) >= n_results, 120, every=2)
        # A rollout's SIGTERM: the sinks flush what they hold and commit, then exit cleanly.
        for s in sinks:
            assert s.stop(90) == 0, s.tail()
        group = vals["stream"]["kafka"]["consumerGroup"]
        for g in (f"{group}-sink-s3", f"{group}-sink-cloudwatch"):
            assert group_lag(admin_bootstrap, g, topics[1:]) == 0, g
    finally:
        dep.stop_all()

    assert_delivered(ref, moto, vals, log_group)
    assert dep.unread_variables() == {}, "rendered settings that no process reads"
    return dep


def test_kafka_deployment_as_rendered_delivers_what_analyze_finds(kafka_broker, redis_db, moto,  # noqa: F811
                                                                  capture, tmp_path):
    rehearse(HERE / "values-kafka.yaml", kafka_broker.bootstrap,
             {"MIRRORSCOPE_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
              "AWS_ACCESS_KEY_ID": CREDENTIALS["AWS_ACCESS_KEY_ID"],
              "AWS_SECRET_ACCESS_KEY": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]},
             redis_db, moto, capture, tmp_path)


def test_msk_iam_deployment_as_rendered_delivers_what_analyze_finds(msk_broker, redis_db, moto,
                                                                    capture, tmp_path):
    """The chart's MSK values (SASL_SSL, AWS_MSK_IAM): the worker (aiokafka through Faust),
    the sinks and the collector (kafka-python) all sign in with tokens from the pod's
    credentials (here the test's static key, as IRSA would inject one), and verify the
    broker's certificate against the CA the test hands them (MSK's is publicly trusted)."""
    ca = tmp_path / "kafka-ca.pem"
    shutil.copy(msk_broker.ca, ca)
    rehearse(HERE / "values-msk.yaml", msk_broker.bootstrap,
             {"MIRRORSCOPE_KAFKA_BOOTSTRAP": msk_broker.iam_bootstrap,
              "MIRRORSCOPE_KAFKA_CA": "/tmp/kafka-ca.pem",
              "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
             redis_db, moto, capture, tmp_path, files=[ca])
    log = msk_broker.validator_log()
    assert f"accepted {ACCESS_KEY}" in log and "refused" not in log
