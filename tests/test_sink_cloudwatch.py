"""CloudWatch sink against a real moto server: the metrics and the alert log events match the
records processed."""

from __future__ import annotations

import datetime as _dt

import msgspec
import pytest

from schemas.records import Alert
from stream_app.core.processor import Results
from stream_app.sinks.cloudwatch import CloudWatchOutputs, CloudWatchSettings, CloudWatchSink
from tests.sink_helpers import Moto, client, make_alert, make_flow, make_http


@pytest.fixture
def aws(moto, monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    moto.reset()
    logs = client("logs", moto)
    logs.create_log_group(logGroupName="/mirrorscope/alerts")
    return client("cloudwatch", moto), logs


def _sum(cw, name, dims=()):
    now = _dt.datetime.now(_dt.timezone.utc)
    r = cw.get_metric_statistics(Namespace="MirrorScope", MetricName=name,
                                 Dimensions=[{"Name": k, "Value": v} for k, v in dims],
                                 StartTime=now - _dt.timedelta(hours=1),
                                 EndTime=now + _dt.timedelta(hours=1), Period=60, Statistics=["Sum"])
    return sum(p["Sum"] for p in r["Datapoints"])


def _undimensioned(cw, name, dim, values):
    """The series without dimensions. Real CloudWatch matches dimension sets exactly; moto
    (5.2) returns every series of the name when the query has none, so take the dimensioned
    ones back out."""
    return _sum(cw, name) - sum(_sum(cw, name, [(dim, v)]) for v in values)


def test_metrics_and_alert_events_match_the_records(aws, moto):
    cw, logs = aws
    flows = [make_flow(i, proto=(6, 17, 58)[i % 3]) for i in range(90)]
    statuses = [200, 201, 301, 404, 500, 503, None]
    https = [make_http(i, status=statuses[i % len(statuses)]) for i in range(70)]
    alerts = [make_alert(i, type_=("port_scan", "syn_flood")[i % 2],
                         severity=("high", "critical", "low")[i % 3]) for i in range(1203)]
    out = CloudWatchOutputs(CloudWatchSettings(endpoint_url=moto.url, region="us-east-1",
                                               log_stream="test-sink", flush_interval_s=3600))
    for i in range(0, 90, 30):
        out.write(Results(flows=flows[i:i + 30], http=https[i:i + 30]))
    out.sink.add("alerts", alerts)
    written = out.close()
    assert written["cloudwatch_logs"] == "logs:/mirrorscope/alerts/test-sink"

    protos = ("TCP", "UDP", "ICMP", "ICMPv6", "Other")
    assert _undimensioned(cw, "Flows", "Protocol", protos) == 90
    assert _undimensioned(cw, "Packets", "Protocol", protos) == sum(f.packets for f in flows)
    assert _undimensioned(cw, "Bytes", "Protocol", protos) == sum(f.bytes for f in flows)
    assert _sum(cw, "Bytes", [("Protocol", "TCP")]) == sum(f.bytes for f in flows if f.protocol == 6)
    assert _sum(cw, "Flows", [("Protocol", "UDP")]) == 30
    assert _sum(cw, "Flows", [("Protocol", "ICMPv6")]) == 30
    classes = ("1xx", "2xx", "3xx", "4xx", "5xx", "None")
    assert _undimensioned(cw, "HttpTransactions", "StatusClass", classes) == 70
    assert _sum(cw, "HttpTransactions", [("StatusClass", "5xx")]) == 20
    assert _sum(cw, "HttpTransactions", [("StatusClass", "None")]) == 10
    # the alarms module's metric: Alerts by Severity
    assert _sum(cw, "Alerts", [("Severity", "high")]) == 401
    assert _sum(cw, "Alerts", [("Severity", "critical")]) == 401
    assert _sum(cw, "Alerts", [("Type", "syn_flood")]) == 601

    events, token = [], None
    while True:
        kw = {"nextToken": token} if token else {}
        r = logs.get_log_events(logGroupName="/mirrorscope/alerts", logStreamName="test-sink",
                                startFromHead=True, **kw)
        events += r["events"]
        if not r["events"] or r["nextForwardToken"] == token:
            break
        token = r["nextForwardToken"]
    got = [msgspec.json.decode(e["message"], type=Alert) for e in events]
    assert sorted(got, key=lambda a: a.alert_id) == alerts
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)


def test_failed_flush_keeps_everything_for_the_next(aws, moto):
    """A refused connection (nothing reached the service): the sums and events stay queued
    and the next flush sends them once. (A call that times out may still have been applied:
    the sink is at-least-once for metrics and log events, see docs/athena.md.)"""
    cw, logs = aws
    from tests.sink_helpers import free_port
    dead = Moto.__new__(Moto)
    dead.url = f"http://127.0.0.1:{free_port()}"
    sink = CloudWatchSink(CloudWatchSettings(log_stream="s2"),
                          cw_client=client("cloudwatch", dead, retries={"total_max_attempts": 1}),
                          logs_client=client("logs", dead, retries={"total_max_attempts": 1}))
    sink.add("flows", [make_flow(i) for i in range(5)])
    sink.add("alerts", [make_alert(i) for i in range(3)])
    with pytest.raises(Exception):
        sink.flush()
    sink.cw = cw
    with pytest.raises(Exception):
        sink.flush()  # the metrics go, the events still fail
    sink.logs = logs
    sink.flush()
    assert _sum(cw, "Flows", [("Protocol", "TCP")]) == 5
    r = logs.get_log_events(logGroupName="/mirrorscope/alerts", logStreamName="s2", startFromHead=True)
    assert len(r["events"]) == 3
