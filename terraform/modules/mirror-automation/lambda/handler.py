"""Create (and expire) VPC Traffic Mirroring sessions for instances' primary ENIs.

Invoked by EventBridge on
  * "EC2 Instance State-change Notification" with state "running", and
  * "Tag Change on Resource" for an EC2 instance:
    mirror the instance's primary ENI (device index 0) when it carries the opt-in tag;
  * "GuardDuty Finding" about an EC2 instance (incident response, as in AWS's "traffic mirroring
    for incident response" pattern): mirror the instance's primary ENI for INCIDENT_MINUTES,
    whether or not it opted in; the session is tagged with its expiry time;
  * "Scheduled Event" (the expiry rule, every few minutes): delete the incident sessions whose
    expiry time has passed.

Loop guard: an instance is never mirrored when it is one of the pipeline's own parts: any tag in
EXCLUDE_TAGS (the collectors' role tag, their autoscaling group, EKS node tags), any security
group in EXCLUDE_SECURITY_GROUP_IDS (the collectors', the EKS nodes'), an ENI in
EXCLUDE_ENI_IDS, or an ENI that AWS manages (load balancer, requester-managed). Mirroring a
collector would send its received VXLAN back to itself, a loop that grows with every packet.

Errors: a permanent one (the instance does not exist, its type is not on the Nitro system, the
session number is taken on that ENI, an invalid parameter) is logged and returned, not raised,
so it is not retried into the dead-letter queue; anything else (throttling, a 5xx, a timeout) is
logged and raised, so EventBridge/Lambda retry it.

Configuration (environment):
  TARGET_ID                   traffic mirror target ID (required)
  FILTER_ID                   traffic mirror filter ID (required)
  SESSION_NUMBER              session number, 1-32766 (default 1)
  VNI                         VXLAN network identifier, 0-16777215 (empty: AWS assigns one)
  PACKET_LENGTH               bytes to mirror of each packet, 1-8500 (empty: whole packets)
  TAG_KEY                     opt-in tag key (required: there is no "mirror everything")
  TAG_VALUE                   opt-in tag value (empty: any value of TAG_KEY opts in)
  EXCLUDE_TAGS                JSON object tag key -> value ("*": any value) that exclude
  EXCLUDE_SECURITY_GROUP_IDS  comma-separated security group IDs that exclude
  EXCLUDE_ENI_IDS             comma-separated ENI IDs never mirrored
  INCIDENT_SESSION_NUMBER     session number of incident sessions (default 2)
  INCIDENT_MINUTES            how long an incident session lives (default 60)
  INCIDENT_MIN_SEVERITY       least GuardDuty severity that starts one (default 7, "high")

Every outcome is logged as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.exceptions import ClientError

STATE_CHANGE = "EC2 Instance State-change Notification"
TAG_CHANGE = "Tag Change on Resource"
GUARDDUTY = "GuardDuty Finding"
SCHEDULED = "Scheduled Event"
MANAGED_BY_TAG = ("ManagedBy", "mirrorscope")
EXPIRES_TAG = "mirrorscope:expires-at"  # epoch seconds, on incident sessions only
# ENIs AWS creates and manages for its own services: never a workload, often the mirror target.
MANAGED_INTERFACE_TYPES = {"network_load_balancer", "gateway_load_balancer",
                           "gateway_load_balancer_endpoint", "vpc_endpoint", "nat_gateway",
                           "transit_gateway", "lambda", "load_balancer"}
# Error codes retrying cannot fix. Anything else is treated as transient and raised.
PERMANENT_ERRORS = {
    "InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed",
    "InvalidNetworkInterfaceID.NotFound", "InvalidNetworkInterfaceId.Malformed",
    "InvalidParameterValue", "InvalidParameter", "InvalidParameterCombination",
    "InvalidTrafficMirrorTargetId.NotFound", "InvalidTrafficMirrorFilterId.NotFound",
    "TrafficMirrorSessionLimitExceeded", "TrafficMirrorSourcesPerTargetLimitExceeded",
    "UnsupportedOperation", "OperationNotPermitted",
}


def log(level: str, event: str, **fields: Any) -> None:
    """Write one JSON object per line to stdout: Lambda ships it to CloudWatch Logs, where Logs
    Insights parses the fields."""
    sys.stdout.write(json.dumps({"level": level, "event": event, **fields}, default=str,
                                sort_keys=True) + "\n")
    sys.stdout.flush()


class Permanent(Exception):
    """An outcome retrying cannot change; ``reason`` names it in the log."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


def _csv(raw: str | None) -> frozenset[str]:
    return frozenset(p.strip() for p in (raw or "").split(",") if p.strip())


@dataclass(frozen=True)
class Config:
    target_id: str
    filter_id: str
    session_number: int
    vni: int | None
    packet_length: int | None
    tag_key: str
    tag_value: str | None
    exclude_tags: Mapping[str, str] = field(default_factory=dict)
    exclude_security_groups: frozenset[str] = frozenset()
    exclude_enis: frozenset[str] = frozenset()
    incident_session_number: int = 2
    incident_minutes: int = 60
    incident_min_severity: float = 7.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        def opt_int(name: str, lo: int, hi: int) -> int | None:
            raw = env.get(name, "").strip()
            if not raw:
                return None
            value = int(raw)
            if not lo <= value <= hi:
                raise ValueError(f"{name}={value} is outside {lo}-{hi}")
            return value

        missing = [n for n in ("TARGET_ID", "FILTER_ID", "TAG_KEY") if not env.get(n, "").strip()]
        if missing:
            raise ValueError(f"missing required environment variable(s): {', '.join(missing)}")
        exclude_tags = json.loads(env.get("EXCLUDE_TAGS", "").strip() or "{}")
        if not isinstance(exclude_tags, dict):
            raise ValueError("EXCLUDE_TAGS must be a JSON object of tag key -> value or \"*\"")
        cfg = cls(
            target_id=env["TARGET_ID"].strip(),
            filter_id=env["FILTER_ID"].strip(),
            session_number=opt_int("SESSION_NUMBER", 1, 32766) or 1,
            vni=opt_int("VNI", 0, 16777215),
            packet_length=opt_int("PACKET_LENGTH", 1, 8500),
            tag_key=env["TAG_KEY"].strip(),
            tag_value=env.get("TAG_VALUE", "").strip() or None,
            exclude_tags={str(k): str(v) for k, v in exclude_tags.items()},
            exclude_security_groups=_csv(env.get("EXCLUDE_SECURITY_GROUP_IDS")),
            exclude_enis=_csv(env.get("EXCLUDE_ENI_IDS")),
            incident_session_number=opt_int("INCIDENT_SESSION_NUMBER", 1, 32766) or 2,
            incident_minutes=opt_int("INCIDENT_MINUTES", 1, 7 * 24 * 60) or 60,
            incident_min_severity=float(env.get("INCIDENT_MIN_SEVERITY", "").strip() or 7.0),
        )
        if cfg.incident_session_number == cfg.session_number:
            raise ValueError("INCIDENT_SESSION_NUMBER must differ from SESSION_NUMBER (an ENI "
                             "cannot have two sessions with one number)")
        return cfg

    def opted_in(self, tags: dict[str, str]) -> bool:
        if self.tag_key not in tags:
            return False
        return self.tag_value is None or tags[self.tag_key] == self.tag_value

    def excluded_by_tag(self, tags: dict[str, str]) -> str | None:
        for key, want in self.exclude_tags.items():
            if key.endswith("*"):  # a key prefix, e.g. kubernetes.io/cluster/*
                hit = next((k for k in tags if k.startswith(key[:-1])), None)
                if hit is not None and want in ("*", tags[hit]):
                    return hit
            elif key in tags and want in ("*", tags[key]):
                return key
        return None


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------

def instance_id_from_event(event: dict[str, Any]) -> str | None:
    """The instance an opt-in event is about, or None when the event is not one we act on."""
    detail_type = event.get("detail-type")
    detail = event.get("detail") or {}
    if detail_type == STATE_CHANGE:
        if detail.get("state") != "running":
            return None
        return detail.get("instance-id")
    if detail_type == TAG_CHANGE:
        if detail.get("service") != "ec2" or detail.get("resource-type") != "instance":
            return None
        for arn in event.get("resources") or []:
            # arn:aws:ec2:REGION:ACCOUNT:instance/i-0123...
            if ":instance/" in arn:
                return arn.rsplit("/", 1)[1]
    return None


def finding_from_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """(instance id, finding id, type, severity) of a GuardDuty finding about an instance."""
    if event.get("detail-type") != GUARDDUTY:
        return None
    detail = event.get("detail") or {}
    resource = detail.get("resource") or {}
    instance_id = (resource.get("instanceDetails") or {}).get("instanceId")
    if resource.get("resourceType") != "Instance" or not instance_id:
        return None
    return {"instance_id": instance_id, "finding_id": detail.get("id"),
            "finding_type": detail.get("type"), "severity": float(detail.get("severity") or 0)}


# ---------------------------------------------------------------------------------------------
# EC2
# ---------------------------------------------------------------------------------------------

def primary_eni(instance: dict[str, Any]) -> dict[str, Any] | None:
    for eni in instance.get("NetworkInterfaces") or []:
        if (eni.get("Attachment") or {}).get("DeviceIndex") == 0:
            return eni
    return None


def client_token(eni_id: str, cfg: Config, number: int, window: str = "") -> str:
    # Same ENI + target + session number (+ incident window) -> same token: a retried or racing
    # call is a no-op.
    return f"ms-{eni_id}-{cfg.target_id}-{number}{window}"[:64]


def describe_instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    # A missing instance is an error response (InvalidInstanceID.NotFound), never an empty list.
    [instance] = [i for r in ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
                  for i in r["Instances"]]
    return instance


def guard(ec2: Any, instance: dict[str, Any], eni: dict[str, Any], cfg: Config) -> str | None:
    """Why this instance/ENI must never be mirrored (the loop guard), or None."""
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags") or []}
    tag = cfg.excluded_by_tag(tags)
    if tag is not None:
        return f"excluded-tag:{tag}"
    if eni["NetworkInterfaceId"] in cfg.exclude_enis:
        return "excluded-eni"
    groups = {g["GroupId"] for g in eni.get("Groups") or []}
    hit = sorted(groups & cfg.exclude_security_groups)
    if hit:
        return f"excluded-security-group:{hit[0]}"
    if eni.get("InterfaceType", "interface") in MANAGED_INTERFACE_TYPES or eni.get("RequesterManaged"):
        return "aws-managed-eni"
    return None


def require_nitro(ec2: Any, instance: dict[str, Any]) -> None:
    """Traffic Mirroring needs a Nitro instance type: say so now instead of failing later."""
    itype = instance.get("InstanceType")
    [info] = ec2.describe_instance_types(InstanceTypes=[itype])["InstanceTypes"]
    if info.get("Hypervisor") != "nitro":
        raise Permanent("not-nitro", f"{itype} is not on the Nitro system (hypervisor "
                                     f"{info.get('Hypervisor')}): it cannot be a mirror source")


def sessions_on(ec2: Any, eni_id: str) -> list[dict[str, Any]]:
    return ec2.describe_traffic_mirror_sessions(Filters=[
        {"Name": "network-interface-id", "Values": [eni_id]}])["TrafficMirrorSessions"]


def create_session(ec2: Any, instance_id: str, eni_id: str, cfg: Config, number: int,
                   extra_tags: dict[str, str], window: str = "") -> dict[str, Any]:
    existing = sessions_on(ec2, eni_id)
    ours = [s for s in existing if s["TrafficMirrorTargetId"] == cfg.target_id]
    if ours:
        return {"action": "exists", "instance_id": instance_id, "network_interface_id": eni_id,
                "traffic_mirror_session_id": ours[0]["TrafficMirrorSessionId"]}
    clash = [s for s in existing if s["SessionNumber"] == number]
    if clash:
        raise Permanent("session-number-in-use",
                        f"session number {number} is taken on {eni_id} by "
                        f"{clash[0]['TrafficMirrorSessionId']}")
    tags = {MANAGED_BY_TAG[0]: MANAGED_BY_TAG[1], "mirrorscope:instance-id": instance_id,
            **extra_tags}
    params: dict[str, Any] = {
        "NetworkInterfaceId": eni_id,
        "TrafficMirrorTargetId": cfg.target_id,
        "TrafficMirrorFilterId": cfg.filter_id,
        "SessionNumber": number,
        "Description": f"MirrorScope: {instance_id}",
        "ClientToken": client_token(eni_id, cfg, number, window),
        "TagSpecifications": [{"ResourceType": "traffic-mirror-session",
                               "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    }
    if cfg.vni is not None:
        params["VirtualNetworkId"] = cfg.vni
    if cfg.packet_length is not None:
        params["PacketLength"] = cfg.packet_length
    session = ec2.create_traffic_mirror_session(**params)["TrafficMirrorSession"]
    return {"action": "created", "instance_id": instance_id, "network_interface_id": eni_id,
            "traffic_mirror_session_id": session["TrafficMirrorSessionId"],
            "virtual_network_id": session.get("VirtualNetworkId")}


def _mirrorable(ec2: Any, instance: dict[str, Any], cfg: Config) -> tuple[dict | None, dict]:
    """(primary ENI, None) or (None, the skip result)."""
    instance_id = instance["InstanceId"]
    eni = primary_eni(instance)
    if eni is None:
        return None, {"action": "skipped", "reason": "no-primary-eni", "instance_id": instance_id}
    why = guard(ec2, instance, eni, cfg)
    if why is not None:
        return None, {"action": "skipped", "reason": "loop-guard", "guard": why,
                      "instance_id": instance_id, "network_interface_id": eni["NetworkInterfaceId"]}
    require_nitro(ec2, instance)
    return eni, {}


def ensure_session(ec2: Any, instance_id: str, cfg: Config) -> dict[str, Any]:
    """The opt-in path: a permanent session for an instance that carries the opt-in tag."""
    instance = describe_instance(ec2, instance_id)
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags") or []}
    if not cfg.opted_in(tags):
        return {"action": "skipped", "reason": "not-opted-in", "instance_id": instance_id,
                "tag_key": cfg.tag_key}
    eni, skipped = _mirrorable(ec2, instance, cfg)
    if eni is None:
        return skipped
    return create_session(ec2, instance_id, eni["NetworkInterfaceId"], cfg, cfg.session_number, {})


def incident_session(ec2: Any, finding: dict[str, Any], cfg: Config, now: float) -> dict[str, Any]:
    """The GuardDuty path: a session that lives cfg.incident_minutes, opt-in or not."""
    instance_id = finding["instance_id"]
    if finding["severity"] < cfg.incident_min_severity:
        return {"action": "ignored", "reason": "below-min-severity", "instance_id": instance_id,
                "severity": finding["severity"], "min_severity": cfg.incident_min_severity}
    instance = describe_instance(ec2, instance_id)
    eni, skipped = _mirrorable(ec2, instance, cfg)
    if eni is None:
        return skipped
    expires = int(now) + cfg.incident_minutes * 60
    window = f"-{int(now) // (cfg.incident_minutes * 60)}"  # a new window gets a new token
    extra = {EXPIRES_TAG: str(expires), "mirrorscope:reason": "guardduty",
             "mirrorscope:finding-type": str(finding["finding_type"])[:255],
             "mirrorscope:finding-id": str(finding["finding_id"])[:255]}
    result = create_session(ec2, instance_id, eni["NetworkInterfaceId"], cfg,
                            cfg.incident_session_number, extra, window)
    if result["action"] == "created":
        result["expires_at"] = datetime.fromtimestamp(expires, timezone.utc).isoformat()
    result["finding_id"] = finding["finding_id"]
    return result


def expire_sessions(ec2: Any, cfg: Config, now: float) -> dict[str, Any]:
    """Delete our incident sessions whose expiry time has passed (the scheduled rule)."""
    deleted, kept = [], 0
    paginator = ec2.get_paginator("describe_traffic_mirror_sessions")
    for page in paginator.paginate(Filters=[
            {"Name": "traffic-mirror-target-id", "Values": [cfg.target_id]}]):
        for s in page["TrafficMirrorSessions"]:
            tags = {t["Key"]: t["Value"] for t in s.get("Tags") or []}
            if tags.get(MANAGED_BY_TAG[0]) != MANAGED_BY_TAG[1] or EXPIRES_TAG not in tags:
                continue  # permanent sessions, and sessions someone else made, are not ours to end
            try:
                expires = float(tags[EXPIRES_TAG])
            except ValueError:
                log("WARNING", "bad-expiry-tag", traffic_mirror_session_id=s["TrafficMirrorSessionId"],
                    value=tags[EXPIRES_TAG])
                continue
            if expires > now:
                kept += 1
                continue
            ec2.delete_traffic_mirror_session(TrafficMirrorSessionId=s["TrafficMirrorSessionId"])
            deleted.append(s["TrafficMirrorSessionId"])
    return {"action": "expired", "deleted": deleted, "active": kept}


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def dispatch(event: dict[str, Any], ec2_factory, now: float) -> dict[str, Any]:
    instance_id = instance_id_from_event(event)
    if instance_id is not None:
        return ensure_session(ec2_factory(), instance_id, Config.from_env())
    finding = finding_from_event(event)
    if finding is not None:
        return incident_session(ec2_factory(), finding, Config.from_env(), now)
    if event.get("detail-type") == SCHEDULED and event.get("source") == "aws.events":
        return expire_sessions(ec2_factory(), Config.from_env(), now)
    return {"action": "ignored", "reason": "not-an-instance-event",
            "detail_type": event.get("detail-type")}


def handler(event: dict[str, Any], context: Any = None, now: float | None = None) -> dict[str, Any]:
    request_id = getattr(context, "aws_request_id", None)
    where = {"request_id": request_id, "event_id": event.get("id"),
             "detail_type": event.get("detail-type"), "resources": event.get("resources")}
    try:
        result = dispatch(event, lambda: boto3.client("ec2"), time.time() if now is None else now)
    except Permanent as exc:
        # Retrying cannot help: log it for the operator and finish the invocation.
        result = {"action": "failed", "permanent": True, "reason": exc.reason, "message": str(exc)}
        log("ERROR", "mirror-session-permanent-error", **where, **result)
        return result
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in PERMANENT_ERRORS:
            result = {"action": "failed", "permanent": True, "reason": code, "message": str(exc)}
            log("ERROR", "mirror-session-permanent-error", **where, **result)
            return result
        log("ERROR", "mirror-session-error", **where, error=type(exc).__name__, code=code,
            message=str(exc))
        raise
    except Exception as exc:
        log("ERROR", "mirror-session-error", **where, error=type(exc).__name__, message=str(exc))
        raise
    log("INFO", "mirror-session", request_id=request_id, event_id=event.get("id"), **result)
    return result
