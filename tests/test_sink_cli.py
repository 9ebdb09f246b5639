"""`mirrorscope sink s3|cloudwatch` settings: --config YAML < MIRRORSCOPE_* environment <
flags; the commands hang off the `mirrorscope` group. No broker: the consumer is replaced."""

from __future__ import annotations

import urllib.request

import pytest
from click.testing import CliRunner

from stream_app.cli import sink as sink_cli
from stream_app.cli import main
from tests.sink_helpers import free_port


@pytest.fixture
def captured(monkeypatch):
    got = {}

    class NoKafka:
        def __init__(self, topics, group, bootstrap, on_revoke=None, **extra):
            got.update(topics=topics, group=group, bootstrap=bootstrap, extra=extra)

    def fake_run(src, sink, kinds, stop, **kw):
        got.update(sink=sink, kinds=kinds, kw=kw)
        return {}

    monkeypatch.setattr(sink_cli, "KafkaSource", NoKafka)
    monkeypatch.setattr(sink_cli, "run_s3", fake_run)
    monkeypatch.setattr(sink_cli, "run_cloudwatch", fake_run)
    for k in ("MIRRORSCOPE_S3_BUCKET", "MIRRORSCOPE_S3_PREFIX", "MIRRORSCOPE_KAFKA_GROUP",
              "MIRRORSCOPE_CLOUDWATCH_NAMESPACE", "MIRRORSCOPE_CLOUDWATCH_LOG_GROUP",
              "MIRRORSCOPE_TOPIC_FLOWS", "MIRRORSCOPE_HEALTH_PORT", "MIRRORSCOPE_METRICS_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return got


def test_s3_settings_precedence(captured, tmp_path, monkeypatch):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("bucket: from-config\nprefix: cfg/\nmax-file-records: 123\n"
                   "topic_flows: t.flows\nkms_key_id: alias/cfg\n")
    monkeypatch.setenv("MIRRORSCOPE_S3_BUCKET", "from-env")
    monkeypatch.setenv("MIRRORSCOPE_KAFKA_GROUP", "mirrorscope-sink-s3")
    r = CliRunner().invoke(main, ["sink", "s3", "--config", str(cfg), "--prefix", "flag/",
                                  "--data-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    s = captured["sink"].s
    assert (s.bucket, s.prefix, s.kms_key_id) == ("from-env", "flag/", "alias/cfg")
    assert s.bounds.max_records == 123
    assert captured["group"] == "mirrorscope-sink-s3"
    assert captured["topics"] == ["t.flows", "mirrorscope.http", "mirrorscope.alerts",
                                  "mirrorscope.dns", "mirrorscope.tls", "mirrorscope.ssh"]


def test_cloudwatch_defaults_match_terraform_and_helm(captured):
    r = CliRunner().invoke(main, ["sink", "cloudwatch"])
    assert r.exit_code == 0, r.output
    s = captured["sink"].s
    assert (s.namespace, s.log_group) == ("MirrorScope", "/mirrorscope/alerts")
    assert captured["group"] == "mirrorscope-sink-cloudwatch"


def test_health_and_metrics_endpoints():
    port = free_port()
    sink_cli._serve_health(port, lambda: True)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        assert r.status == 200
    port = free_port()
    sink_cli._serve_metrics(port, "s3", lambda: {"uploaded_files": 3, "spool_bytes": 0})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    assert 'mirrorscope_sink_uploaded_files{sink="s3"} 3.0' in body
