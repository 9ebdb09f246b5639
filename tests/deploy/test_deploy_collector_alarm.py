"""The collector's own CloudWatch metrics feed the shipped PacketsDropped alarm.

A real `mirrorscope collect` (transport null: no broker is needed for drops) publishes through
PutMetricData to a real moto server; the test sends it datagrams that are not VXLAN, each one
a counted drop, and reads the metric back from moto's CloudWatch.

The alarm is the one Terraform renders: its values come from `terraform show -json` of the
example's plan (conftest.example_plan), and it is created in moto with PutMetricAlarm. moto
stores alarms but never evaluates them (its state only changes through SetAlarmState, which
would prove nothing), so `evaluate()` below applies CloudWatch's documented rule to the
datapoints moto returns for the alarm's own namespace, metric, dimensions, statistic and
period: over the last `evaluation_periods` periods, ALARM when at least `datapoints_to_alarm`
(default: all) of them breach the threshold by the comparison operator; missing periods count
as `treat_missing_data` says.
"""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta, timezone

from deploy_plan import planned

from deploy_helpers import require_module
from tests.services.collector_proc import Collector, metric_value

boto3 = require_module("boto3")

ALARM = "module.alarms.aws_cloudwatch_metric_alarm.dropped_packets"
COMPARE = {
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "GreaterThanThreshold": lambda v, t: v > t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}


def evaluate(cw, alarm: dict, now: datetime) -> tuple[str, list[float]]:
    """(state CloudWatch would set, the evaluated datapoints) for a moto-stored alarm."""
    period, n = alarm["Period"], alarm["EvaluationPeriods"]
    m = alarm.get("DatapointsToAlarm") or n
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    resp = cw.get_metric_statistics(
        Namespace=alarm["Namespace"], MetricName=alarm["MetricName"],
        Dimensions=alarm.get("Dimensions") or [], StartTime=end - timedelta(seconds=period * n),
        EndTime=end, Period=period, Statistics=[alarm["Statistic"]])
    values = [p[alarm["Statistic"]] for p in sorted(resp["Datapoints"], key=lambda p: p["Timestamp"])]
    breaching = sum(COMPARE[alarm["ComparisonOperator"]](v, alarm["Threshold"]) for v in values)
    missing = n - len(values)
    if alarm.get("TreatMissingData") == "breaching":
        breaching += missing
    elif alarm.get("TreatMissingData") in (None, "missing") and not values:
        return "INSUFFICIENT_DATA", values
    return ("ALARM" if breaching >= m else "OK"), values


def send_garbage(port: int, count: int) -> None:
    """Datagrams that are not VXLAN (flags byte 0): each is dropped as bad_vxlan."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(b"\x00" * 7 + bytes([i % 256]) + b"x" * 50, ("127.0.0.1", port))
            if i % 200 == 199:
                time.sleep(0.01)  # stay well inside the socket buffer


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_collector_drops_reach_cloudwatch_and_the_rendered_alarm_fires(example_plan, aws, tmp_path):
    rendered = planned(example_plan, ALARM)
    cw = boto3.client("cloudwatch")
    cw.put_metric_alarm(
        AlarmName=rendered["alarm_name"], Namespace=rendered["namespace"], MetricName=rendered["metric_name"],
        Statistic=rendered["statistic"], Period=rendered["period"],
        EvaluationPeriods=rendered["evaluation_periods"], Threshold=rendered["threshold"],
        ComparisonOperator=rendered["comparison_operator"], TreatMissingData=rendered["treat_missing_data"],
        Dimensions=[{"Name": k, "Value": v} for k, v in (rendered["dimensions"] or {}).items()])
    [alarm] = cw.describe_alarms(AlarmNames=[rendered["alarm_name"]])["MetricAlarms"]
    threshold = int(alarm["Threshold"])
    assert evaluate(cw, alarm, datetime.now(timezone.utc))[0] == "OK"  # nothing dropped yet

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    udp.close()
    c = Collector(["--transport", "null", "--listen", "127.0.0.1", "--port", str(port), "--processes", "1",
                   "--source-cidr", "127.0.0.1/32", "--health-port", "0", "--metrics-port", "0"],
                  tmp_path,
                  env={"MIRRORSCOPE_CLOUDWATCH_ENABLED": "true", "MIRRORSCOPE_CLOUDWATCH_INTERVAL_S": "1",
                       "MIRRORSCOPE_CLOUDWATCH_NAMESPACE": rendered["namespace"],
                       "MIRRORSCOPE_CLOUDWATCH_DIMENSIONS": "{}"})
    c.start()
    try:
        c.wait_ready(workers=1, timeout=60)
        below = threshold - 1
        send_garbage(port, below)
        wait_for(lambda: metric_value(c.metrics(), "mirrorscope_collector_datagrams_dropped_total") >= below,
                 30, f"{below} drops counted")

        def dropped(dims=None) -> float:
            resp = cw.get_metric_statistics(
                Namespace=alarm["Namespace"], MetricName="PacketsDroppedByReason" if dims else "PacketsDropped",
                Dimensions=dims or [],
                StartTime=datetime.now(timezone.utc) - timedelta(minutes=10),
                EndTime=datetime.now(timezone.utc) + timedelta(minutes=1), Period=60, Statistics=["Sum"])
            return sum(p["Sum"] for p in resp["Datapoints"])

        wait_for(lambda: dropped() >= below, 30, "PacketsDropped in moto's CloudWatch")
        assert dropped() == below
        state, values = evaluate(cw, alarm, datetime.now(timezone.utc))
        assert (state, sum(values)) == ("OK", below)  # one short of the threshold

        send_garbage(port, 2)
        wait_for(lambda: dropped() >= threshold + 1, 30, "the last drops in CloudWatch")
        state, values = evaluate(cw, alarm, datetime.now(timezone.utc))
        assert state == "ALARM" and sum(values) == threshold + 1
        # by reason, for the dashboard
        assert dropped([{"Name": "Reason", "Value": "bad_vxlan"}]) == threshold + 1
        received = cw.get_metric_statistics(
            Namespace=alarm["Namespace"], MetricName="PacketsReceived",
            StartTime=datetime.now(timezone.utc) - timedelta(minutes=10),
            EndTime=datetime.now(timezone.utc) + timedelta(minutes=1), Period=60, Statistics=["Sum"])
        assert sum(p["Sum"] for p in received["Datapoints"]) == threshold + 1
    finally:
        summary = c.stop()
    assert summary["totals"]["drops"]["bad_vxlan"] == threshold + 1
