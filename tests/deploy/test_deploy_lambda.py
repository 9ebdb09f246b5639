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
OPTED_IN = {TAG_KEY: "true"}


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

    def launch(tags: dict[str, str] | None = OPTED_IN, instance_type: str = "m5.large",
               groups: list[str] | None = None) -> tuple[str, str]:
        kwargs = {}
        if groups:
            kwargs["SecurityGroupIds"] = groups
        if tags:
            kwargs["TagSpecifications"] = [{"ResourceType": "instance",
                                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType=instance_type,
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
    monkeypatch.setenv("TAG_KEY", TAG_KEY)
    monkeypatch.setenv("TAG_VALUE", "")
    # What the Terraform module sets by default (variables.tf exclude_tags), and the collectors'
    # security group as examples/complete passes it.
    monkeypatch.setenv("EXCLUDE_TAGS", json.dumps({"mirrorscope:role": "*", "eks:cluster-name": "*",
                                                   "kubernetes.io/cluster/*": "*"}))
    collectors_sg = ec2.create_security_group(GroupName="collectors", Description="collectors",
                                              VpcId=vpc)["GroupId"]
    monkeypatch.setenv("EXCLUDE_SECURITY_GROUP_IDS", collectors_sg)
    monkeypatch.setenv("INCIDENT_SESSION_NUMBER", "3")
    monkeypatch.setenv("INCIDENT_MINUTES", "30")
    monkeypatch.setenv("INCIDENT_MIN_SEVERITY", "7")
    return SimpleNamespace(ec2=ec2, target=target, filter=mirror_filter, launch=launch,
                           collectors_sg=collectors_sg, subnet=subnet)


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
    assert tags == {"ManagedBy": "mirrorscope", "mirrorscope:instance-id": instance}  # no expiry: permanent
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
    untagged, _ = world.launch(tags=None)
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
    instance, primary = world.launch(tags=None)
    assert handler.handler(state_change(instance), CONTEXT)["action"] == "skipped"

    world.ec2.create_tags(Resources=[instance], Tags=[{"Key": TAG_KEY, "Value": "yes"}])  # any value
    result = handler.handler(tag_change(instance, {TAG_KEY: "yes"}), CONTEXT)

    assert result["action"] == "created"
    assert [s["NetworkInterfaceId"] for s in sessions(world.ec2)] == [primary]


@pytest.mark.parametrize("event", [
    state_change("i-0123456789abcdef0", state="stopped"),
    {**tag_change("i-0123456789abcdef0", {TAG_KEY: "true"}),
     "detail": {"service": "ec2", "resource-type": "volume", "changed-tag-keys": [TAG_KEY]}},
    {"detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2", "detail": {}},
], ids=["stopped", "volume-tag", "other"])
def test_other_events_are_ignored_without_calling_ec2(event, monkeypatch):
    monkeypatch.delenv("TARGET_ID", raising=False)  # would raise if the handler went further
    assert handler.handler(event, CONTEXT)["action"] == "ignored"


def test_permanent_errors_are_returned_not_retried(world, capsys):
    """A missing instance cannot appear on a retry: logged, returned, never raised into the DLQ."""
    result = handler.handler(state_change("i-0000000000000dead"), CONTEXT)
    assert result["action"] == "failed" and result["permanent"] is True
    assert result["reason"] == "InvalidInstanceID.NotFound"
    [line] = log_lines(capsys)
    assert line["level"] == "ERROR" and line["event"] == "mirror-session-permanent-error"
    assert "i-0000000000000dead" in json.dumps(line)


def test_non_nitro_instance_is_a_permanent_error(world, capsys):
    instance, _ = world.launch(instance_type="t2.micro")  # Xen: cannot be a mirror source
    result = handler.handler(state_change(instance), CONTEXT)
    assert (result["action"], result["reason"], result["permanent"]) == ("failed", "not-nitro", True)
    assert sessions(world.ec2) == []


def test_session_number_clash_is_a_permanent_error(world):
    instance, primary = world.launch()
    other_target = world.ec2.create_traffic_mirror_target(
        NetworkInterfaceId=world.ec2.create_network_interface(SubnetId=world.subnet)
        ["NetworkInterface"]["NetworkInterfaceId"])["TrafficMirrorTarget"]["TrafficMirrorTargetId"]
    world.ec2.create_traffic_mirror_session(  # someone else's session took number 7 on this ENI
        NetworkInterfaceId=primary, TrafficMirrorTargetId=other_target,
        TrafficMirrorFilterId=world.filter, SessionNumber=7)
    result = handler.handler(state_change(instance), CONTEXT)
    assert (result["action"], result["reason"]) == ("failed", "session-number-in-use")
    assert len(sessions(world.ec2, primary)) == 1


def test_transient_errors_are_raised_for_a_retry(world, monkeypatch, capsys):
    instance, _ = world.launch()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: a network error
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(Exception) as info:
        handler.handler(state_change(instance), CONTEXT)
    assert not isinstance(info.value, handler.Permanent)
    [line] = log_lines(capsys)
    assert line["level"] == "ERROR" and line["event"] == "mirror-session-error"


def test_configuration_errors_are_raised(world, monkeypatch, capsys):
    monkeypatch.delenv("FILTER_ID")
    instance, _ = world.launch()
    with pytest.raises(ValueError, match="FILTER_ID"):
        handler.handler(state_change(instance), CONTEXT)
    monkeypatch.setenv("FILTER_ID", world.filter)
    monkeypatch.setenv("TAG_KEY", "")
    with pytest.raises(ValueError, match="TAG_KEY"):  # no "mirror every instance" mode
        handler.handler(state_change(instance), CONTEXT)
    assert sessions(world.ec2) == []


# --------------------------------------------------------------------------------------------
# loop guard
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tags", [
    {"mirrorscope:role": "collector"},  # what the collectors module tags its instances with
    {"eks:cluster-name": "prod"},  # managed node groups
    {"kubernetes.io/cluster/prod": "owned"},  # self-managed nodes, Karpenter (a key prefix)
], ids=["collector", "eks-node", "k8s-cluster-prefix"])
def test_loop_guard_never_mirrors_the_pipeline_by_tag(world, tags, capsys):
    instance, primary = world.launch({**OPTED_IN, **tags})  # even when opted in by mistake
    result = handler.handler(state_change(instance), CONTEXT)
    assert (result["action"], result["reason"]) == ("skipped", "loop-guard")
    assert result["guard"] == f"excluded-tag:{next(iter(tags))}"
    # nor through the incident path
    assert handler.handler(finding(instance), CONTEXT)["reason"] == "loop-guard"
    assert sessions(world.ec2) == []


def test_loop_guard_never_mirrors_an_eni_of_an_excluded_security_group(world):
    instance, primary = world.launch(groups=[world.collectors_sg])
    result = handler.handler(state_change(instance), CONTEXT)
    assert result["guard"] == f"excluded-security-group:{world.collectors_sg}"
    assert sessions(world.ec2) == []


def test_loop_guard_never_mirrors_aws_managed_enis():
    instance = {"InstanceId": "i-1", "Tags": [], "NetworkInterfaces": [
        {"NetworkInterfaceId": "eni-nlb", "InterfaceType": "network_load_balancer",
         "Attachment": {"DeviceIndex": 0}, "Groups": []}]}
    cfg = handler.Config.from_env({"TARGET_ID": "tmt-1", "FILTER_ID": "tmf-1", "TAG_KEY": TAG_KEY,
                                   "EXCLUDE_ENI_IDS": "eni-listed"})
    assert handler.guard(None, instance, instance["NetworkInterfaces"][0], cfg) == "aws-managed-eni"
    listed = {"NetworkInterfaceId": "eni-listed", "InterfaceType": "interface", "Groups": []}
    assert handler.guard(None, instance, listed, cfg) == "excluded-eni"


# --------------------------------------------------------------------------------------------
# incident response: GuardDuty finding -> time-boxed session -> expiry
# --------------------------------------------------------------------------------------------

def finding(instance_id: str, severity: float = 8.0) -> dict:
    # The shape EventBridge delivers for aws.guardduty "GuardDuty Finding" (trimmed).
    return {
        "version": "0", "id": "c8c4daa7-a20c-2f03-0070-b7393dd542ad", "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty", "account": "123456789012", "time": "2026-11-27T05:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {"schemaVersion": "2.0", "accountId": "123456789012", "region": "us-east-1",
                   "id": "16afba5c5c43e07c9e3e5e2e544e95df", "type": "Backdoor:EC2/C&CActivity.B!DNS",
                   "severity": severity,
                   "resource": {"resourceType": "Instance",
                                "instanceDetails": {"instanceId": instance_id, "instanceType": "m5.large"}}},
    }


def scheduled() -> dict:
    return {"version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-11-27T05:05:00Z",
            "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/x-expire"],
            "detail": {}}


def test_guardduty_finding_mirrors_for_a_while_then_expiry_removes_it(world, capsys):
    suspect, suspect_eni = world.launch(tags=None)  # not opted in: incidents do not need it
    opted, opted_eni = world.launch()
    now = 1_790_000_000.0
    assert handler.handler(state_change(opted), CONTEXT, now=now)["action"] == "created"

    result = handler.handler(finding(suspect), CONTEXT, now=now)

    assert result["action"] == "created" and result["finding_id"] == "16afba5c5c43e07c9e3e5e2e544e95df"
    [session] = sessions(world.ec2, suspect_eni)
    tags = {t["Key"]: t["Value"] for t in session["Tags"]}
    assert tags["mirrorscope:expires-at"] == str(int(now) + 30 * 60)
    assert tags["mirrorscope:reason"] == "guardduty" and tags["ManagedBy"] == "mirrorscope"
    assert session["SessionNumber"] == 3 and session["TrafficMirrorTargetId"] == world.target

    # a repeated finding inside the window is idempotent
    assert handler.handler(finding(suspect), CONTEXT, now=now + 60)["action"] == "exists"
    # the scheduled rule before the time is up keeps it
    early = handler.handler(scheduled(), CONTEXT, now=now + 29 * 60)
    assert early == {"action": "expired", "deleted": [], "active": 1}
    assert len(sessions(world.ec2, suspect_eni)) == 1
    # and after it removes it, and only it (the opted-in session has no expiry)
    late = handler.handler(scheduled(), CONTEXT, now=now + 30 * 60 + 1)
    assert late == {"action": "expired", "deleted": [session["TrafficMirrorSessionId"]], "active": 0}
    assert sessions(world.ec2, suspect_eni) == []
    assert [s["NetworkInterfaceId"] for s in sessions(world.ec2)] == [opted_eni]
    logged = [line for line in log_lines(capsys) if line.get("action") == "expired"]
    assert logged[-1]["deleted"] == [session["TrafficMirrorSessionId"]]


def test_low_severity_findings_and_other_resources_are_ignored(world):
    instance, _ = world.launch(tags=None)
    assert handler.handler(finding(instance, severity=5.0), CONTEXT)["reason"] == "below-min-severity"
    s3_finding = finding(instance)
    s3_finding["detail"]["resource"] = {"resourceType": "S3Bucket"}
    assert handler.handler(s3_finding, CONTEXT)["action"] == "ignored"
    assert sessions(world.ec2) == []


def test_expiry_leaves_sessions_it_did_not_make(world):
    instance, primary = world.launch()
    world.ec2.create_traffic_mirror_session(  # someone's own session to our target, with an old expiry tag
        NetworkInterfaceId=primary, TrafficMirrorTargetId=world.target, TrafficMirrorFilterId=world.filter,
        SessionNumber=9, TagSpecifications=[{"ResourceType": "traffic-mirror-session",
                                             "Tags": [{"Key": "mirrorscope:expires-at", "Value": "1"}]}])
    assert handler.handler(scheduled(), CONTEXT)["deleted"] == []
    assert len(sessions(world.ec2, primary)) == 1
