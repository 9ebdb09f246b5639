"""The mirror-automation Lambda against a real moto server (EC2 API over HTTP).

The handler is imported from terraform/modules/mirror-automation/lambda/handler.py and calls
boto3.client("ec2") exactly as in AWS; AWS_ENDPOINT_URL points boto3 at moto_server.
moto implements traffic-mirror targets, filters and sessions (not filter rules, which the handler
never touches).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import pytest

from deploy_helpers import TERRAFORM, require_module

boto3 = require_module("boto3")
ClientError = require_module("botocore.exceptions").ClientError

HANDLER_PATH = TERRAFORM / "modules" / "mirror-automation" / "lambda" / "handler.py"
TAG_KEY = "mirrorscope:mirror"


def load_handler():
    spec = importlib.util.spec_from_file_location("mirrorscope_mirror_automation_handler", HANDLER_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


handler = load_handler()
CONTEXT = SimpleNamespace(aws_request_id="test-request")


def state_change(instance_id: str, state: str = "running") -> dict:
    # The shape EventBridge delivers for aws.ec2 "EC2 Instance State-change Notification".
    return {
        "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
        "account": "123456789012", "time": "2026-11-27T05:00:00Z", "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "state": state},
    }


def tag_change(instance_id: str, tags: dict[str, str]) -> dict:
    # The shape EventBridge delivers for aws.tag "Tag Change on Resource".
    return {
        "version": "0", "id": "ffd8a6fe-32f8-ef66-c85c-111111111111",
        "detail-type": "Tag Change on Resource", "source": "aws.tag",
        "account": "123456789012", "time": "2026-11-27T05:00:00Z", "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}"],
        "detail": {"changed-tag-keys": list(tags), "service": "ec2", "resource-type": "instance",
                   "version": 2, "tags": tags},
    }


@pytest.fixture
def world(aws, monkeypatch):
    """A VPC with an NLB mirror target, a filter, and a launcher of instances that have a primary
    ENI and a second one attached at device index 1."""
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    nlb = boto3.client("elbv2").create_load_balancer(
        Name="mirrorscope-nlb", Type="network", Scheme="internal", Subnets=[subnet])["LoadBalancers"][0]
    target = ec2.create_traffic_mirror_target(
        NetworkLoadBalancerArn=nlb["LoadBalancerArn"])["TrafficMirrorTarget"]["TrafficMirrorTargetId"]
    mirror_filter = ec2.create_traffic_mirror_filter()["TrafficMirrorFilter"]["TrafficMirrorFilterId"]
    image = "ami-0123456789abcdef0"  # moto does not check it (and listing its AMIs takes 1.5 s)

    def launch(tags: dict[str, str] | None = None) -> tuple[str, str]:
        kwargs = {}
        if tags:
            kwargs["TagSpecifications"] = [{"ResourceType": "instance",
                                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="m5.large",
                                     SubnetId=subnet, **kwargs)["Instances"][0]
        primary = next(n["NetworkInterfaceId"] for n in instance["NetworkInterfaces"]
                       if n["Attachment"]["DeviceIndex"] == 0)
        second = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
        ec2.attach_network_interface(NetworkInterfaceId=second, InstanceId=instance["InstanceId"], DeviceIndex=1)
        return instance["InstanceId"], primary

    monkeypatch.setenv("TARGET_ID", target)
    monkeypatch.setenv("FILTER_ID", mirror_filter)
    monkeypatch.setenv("SESSION_NUMBER", "7")
    monkeypatch.setenv("VNI", "4242")
    monkeypatch.setenv("PACKET_LENGTH", "8500")
    monkeypatch.setenv("TAG_KEY", "")
    monkeypatch.setenv("TAG_VALUE", "")
    return SimpleNamespace(ec2=ec2, target=target, filter=mirror_filter, launch=launch)


def sessions(ec2, eni: str | None = None) -> list[dict]:
    filters = [{"Name": "network-interface-id", "Values": [eni]}] if eni else []
    return ec2.describe_traffic_mirror_sessions(Filters=filters)["TrafficMirrorSessions"]


def log_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_launch_event_creates_a_session_for_the_primary_eni(world, capsys):
    instance, primary = world.launch()

    result = handler.handler(state_change(instance), CONTEXT)

    assert result["action"] == "created"
    [session] = sessions(world.ec2)
    assert session["NetworkInterfaceId"] == primary  # device index 0, not the second ENI
    assert session["TrafficMirrorTargetId"] == world.target
    assert session["TrafficMirrorFilterId"] == world.filter
    assert session["VirtualNetworkId"] == 4242
    assert session["SessionNumber"] == 7
    assert session["PacketLength"] == 8500
    tags = {t["Key"]: t["Value"] for t in session["Tags"]}
    assert tags == {"ManagedBy": "mirrorscope", "mirrorscope:instance-id": instance}
    assert result["traffic_mirror_session_id"] == session["TrafficMirrorSessionId"]
    [line] = log_lines(capsys)
    assert line["level"] == "INFO" and line["action"] == "created" and line["instance_id"] == instance


def test_a_second_event_is_idempotent(world, capsys):
    instance, primary = world.launch()
    first = handler.handler(state_change(instance), CONTEXT)
    second = handler.handler(state_change(instance), CONTEXT)
    third = handler.handler(tag_change(instance, {"Name": "web"}), CONTEXT)

    assert first["action"] == "created"
    assert second["action"] == third["action"] == "exists"
    assert second["traffic_mirror_session_id"] == first["traffic_mirror_session_id"]
    assert len(sessions(world.ec2, primary)) == 1


def test_without_vni_and_packet_length_aws_defaults_apply(world, monkeypatch):
    monkeypatch.setenv("VNI", "")
    monkeypatch.setenv("PACKET_LENGTH", "")
    monkeypatch.delenv("SESSION_NUMBER")
    instance, primary = world.launch()

    assert handler.handler(state_change(instance), CONTEXT)["action"] == "created"
    [session] = sessions(world.ec2, primary)
    assert session["SessionNumber"] == 1
    assert "PacketLength" not in session


def test_opt_in_tag_required_when_configured(world, monkeypatch, capsys):
    monkeypatch.setenv("TAG_KEY", TAG_KEY)
    monkeypatch.setenv("TAG_VALUE", "true")
    untagged, _ = world.launch()
    wrong_value, _ = world.launch({TAG_KEY: "false"})
    tagged, tagged_eni = world.launch({TAG_KEY: "true"})

    assert handler.handler(state_change(untagged), CONTEXT)["reason"] == "not-opted-in"
    assert handler.handler(state_change(wrong_value), CONTEXT)["reason"] == "not-opted-in"
    assert sessions(world.ec2) == []
    assert handler.handler(state_change(tagged), CONTEXT)["action"] == "created"
    assert [s["NetworkInterfaceId"] for s in sessions(world.ec2)] == [tagged_eni]
    skipped = [line for line in log_lines(capsys) if line.get("reason") == "not-opted-in"]
    assert len(skipped) == 2 and skipped[0]["tag_key"] == TAG_KEY


def test_adding_the_opt_in_tag_later_mirrors_the_instance(world, monkeypatch):
    monkeypatch.setenv("TAG_KEY", TAG_KEY)
    instance, primary = world.launch()
    assert handler.handler(state_change(instance), CONTEXT)["action"] == "skipped"

    world.ec2.create_tags(Resources=[instance], Tags=[{"Key": TAG_KEY, "Value": "yes"}])  # any value
    result = handler.handler(tag_change(instance, {TAG_KEY: "yes"}), CONTEXT)

    assert result["action"] == "created"
    assert [s["NetworkInterfaceId"] for s in sessions(world.ec2)] == [primary]


@pytest.mark.parametrize("event", [
    state_change("i-0123456789abcdef0", state="stopped"),
    {**tag_change("i-0123456789abcdef0", {TAG_KEY: "true"}),
     "detail": {"service": "ec2", "resource-type": "volume", "changed-tag-keys": [TAG_KEY]}},
    {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}},
], ids=["stopped", "volume-tag", "other"])
def test_other_events_are_ignored_without_calling_ec2(event, monkeypatch):
    monkeypatch.delenv("TARGET_ID", raising=False)  # would raise if the handler went further
    assert handler.handler(event, CONTEXT)["action"] == "ignored"


def test_errors_are_logged_as_json_and_raised(world, monkeypatch, capsys):
    with pytest.raises(ClientError):
        handler.handler(state_change("i-0000000000000dead"), CONTEXT)
    [line] = log_lines(capsys)
    assert line["level"] == "ERROR" and line["error"] == "ClientError"
    assert "i-0000000000000dead" in json.dumps(line)

    monkeypatch.delenv("FILTER_ID")
    instance, _ = world.launch()
    with pytest.raises(ValueError, match="FILTER_ID"):
        handler.handler(state_change(instance), CONTEXT)
    [line] = log_lines(capsys)
    assert line["level"] == "ERROR" and line["error"] == "ValueError"
    assert sessions(world.ec2) == []
