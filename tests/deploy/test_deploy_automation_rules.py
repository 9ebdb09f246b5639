"""The EventBridge rules the plan renders route the events the Lambda tests use, and the
dashboard shows metrics that something publishes.

The rules' `event_pattern`, from `terraform show -json` of the example's plan, is put on moto's
EventBridge (over HTTP to the moto server) with an SQS target, and each event is sent with
PutEvents: routed events reach the queue, the others do not.
"""

from __future__ import annotations

import ast
import json
import re

import pytest
from deploy_plan import planned

from deploy_helpers import REPO, require_module
from test_deploy_lambda import finding, scheduled, state_change, tag_change

boto3 = require_module("boto3")
RULES = "module.mirror_automation.aws_cloudwatch_event_rule"


def matches(pattern: str, event: dict) -> bool:
    """Route ``event`` through moto's EventBridge: a rule with ``pattern`` targeting an SQS queue,
    PutEvents, and whether the queue received it. (moto does not implement TestEventPattern.)"""
    events, sqs = boto3.client("events"), boto3.client("sqs")
    queue = sqs.create_queue(QueueName="routed")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="under-test", EventPattern=pattern)
    events.put_targets(Rule="under-test", Targets=[{"Id": "q", "Arn": arn}])
    resp = events.put_events(Entries=[{"Source": event["source"], "DetailType": event["detail-type"],
                                       "Detail": json.dumps(event["detail"]), "Resources": event["resources"]}])
    assert resp["FailedEntryCount"] == 0
    got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", [])
    if got:
        delivered = json.loads(got[0]["Body"])
        assert delivered["detail"] == event["detail"]
    return bool(got)


@pytest.mark.parametrize("rule, event, expected", [
    ("guardduty[0]", finding("i-0123456789abcdef0", severity=8.0), True),
    ("guardduty[0]", finding("i-0123456789abcdef0", severity=7.0), True),
    ("guardduty[0]", finding("i-0123456789abcdef0", severity=5.0), False),  # below incident_min_severity
    ("guardduty[0]", {**finding("i-0123456789abcdef0"), "detail": {
        **finding("i-0123456789abcdef0")["detail"], "resource": {"resourceType": "S3Bucket"}}}, False),
    ("instance_running[0]", state_change("i-0123456789abcdef0"), True),
    ("instance_running[0]", state_change("i-0123456789abcdef0", state="stopped"), False),
    ("tag_change[0]", tag_change("i-0123456789abcdef0", {"mirrorscope:mirror": "true"}), True),
    ("tag_change[0]", tag_change("i-0123456789abcdef0", {"Name": "web"}), False),  # another tag
], ids=["gd-high", "gd-at-threshold", "gd-low", "gd-s3", "running", "stopped", "opt-in-tag", "other-tag"])
def test_rendered_rules_route_the_events(example_plan, aws, rule, event, expected):
    pattern = planned(example_plan, f"{RULES}.{rule}")["event_pattern"]
    assert matches(pattern, event) is expected


def test_expiry_rule_is_a_schedule_the_handler_recognises(example_plan):
    rule = planned(example_plan, f"{RULES}.expire[0]")
    assert rule["schedule_expression"] == "rate(5 minutes)"
    # EventBridge's scheduled events carry exactly these two fields the handler dispatches on
    assert (scheduled()["source"], scheduled()["detail-type"]) == ("aws.events", "Scheduled Event")


def published_metric_names() -> set[str]:
    """Metric names the collector (collectors/cloudwatch.py) and the CloudWatch sink emit."""
    names = set()
    for path in (REPO / "collectors" / "cloudwatch.py", REPO / "stream_app" / "sinks" / "cloudwatch.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"[A-Z][A-Za-z]+", node.value):
                names.add(node.value)
    return names


def test_dashboard_shows_the_pipeline_with_published_metrics(example_plan):
    body = json.loads(planned(example_plan, "module.alarms.aws_cloudwatch_dashboard.this")["dashboard_body"])
    titles = [w["properties"].get("title", "") for w in body["widgets"] if w["type"] == "metric"]
    assert [t.split(".")[0] for t in titles] == ["1", "1", "2", "3", "4", "5"]  # collectors -> ... -> alerts
    ours = [m[1] for w in body["widgets"] if w["type"] == "metric"
            for m in w["properties"]["metrics"] if isinstance(m[0], str) and m[0] == "MirrorScope"]
    searched = re.findall(r'MetricName=\\?"(\w+)', json.dumps(body))
    assert {"PacketsReceived", "PacketsPublished", "PacketsDropped", "KernelUdpDrops", "PublishLatency",
            "Flows", "Alerts"} <= set(ours)
    assert set(ours) | set(searched) <= published_metric_names()
    stream = next(w for w in body["widgets"] if w["properties"].get("title") == "2. Stream")
    assert {m[2:4] == ["StreamName", "mirrorscope"] for m in stream["properties"]["metrics"]} == {True}
