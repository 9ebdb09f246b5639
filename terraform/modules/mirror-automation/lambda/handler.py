"""Create a VPC Traffic Mirroring session for an instance's primary ENI.

Invoked by EventBridge on
  * "EC2 Instance State-change Notification" with state "running", and
  * "Tag Change on Resource" for an EC2 instance (when an opt-in tag is configured),
this looks the instance up, takes its primary network interface (device index 0) and creates a
mirror session to the configured target with the configured filter, session number, VNI and
packet length, unless a session from that ENI to that target already exists (idempotent; a
deterministic client token also covers two invocations racing each other).

Configuration (environment):
  TARGET_ID        traffic mirror target ID (required)
  FILTER_ID        traffic mirror filter ID (required)
  SESSION_NUMBER   session number, 1-32766 (default 1)
  VNI              VXLAN network identifier, 0-16777215 (empty: AWS assigns a unique one)
  PACKET_LENGTH    bytes to mirror of each packet, 1-8500 (empty: whole packets)
  TAG_KEY          opt-in tag key (empty: every instance is mirrored)
  TAG_VALUE        opt-in tag value (empty: any value of TAG_KEY opts in)

Every outcome is logged as one JSON line. Errors are logged and re-raised, so the invocation fails
and EventBridge / Lambda retry it and finally send it to the dead-letter queue.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3

STATE_CHANGE = "EC2 Instance State-change Notification"
TAG_CHANGE = "Tag Change on Resource"
MANAGED_BY_TAG = ("ManagedBy", "mirrorscope")


def log(level: str, event: str, **fields: Any) -> None:
    """Write one JSON object per line to stdout: Lambda ships it to CloudWatch Logs, where Logs
    Insights parses the fields."""
    sys.stdout.write(json.dumps({"level": level, "event": event, **fields}, default=str,
                                sort_keys=True) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Config:
    target_id: str
    filter_id: str
    session_number: int
    vni: int | None
    packet_length: int | None
    tag_key: str | None
    tag_value: str | None

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

        missing = [n for n in ("TARGET_ID", "FILTER_ID") if not env.get(n, "").strip()]
        if missing:
            raise ValueError(f"missing required environment variable(s): {', '.join(missing)}")
        return cls(
            target_id=env["TARGET_ID"].strip(),
            filter_id=env["FILTER_ID"].strip(),
            session_number=opt_int("SESSION_NUMBER", 1, 32766) or 1,
            vni=opt_int("VNI", 0, 16777215),
            packet_length=opt_int("PACKET_LENGTH", 1, 8500),
            tag_key=env.get("TAG_KEY", "").strip() or None,
            tag_value=env.get("TAG_VALUE", "").strip() or None,
        )

    def opted_in(self, tags: dict[str, str]) -> bool:
        if self.tag_key is None:
            return True
        if self.tag_key not in tags:
            return False
        return self.tag_value is None or tags[self.tag_key] == self.tag_value


def instance_id_from_event(event: dict[str, Any]) -> str | None:
    """The instance an event is about, or None when the event is not one we act on."""
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


def primary_eni(instance: dict[str, Any]) -> str | None:
    for eni in instance.get("NetworkInterfaces") or []:
        if (eni.get("Attachment") or {}).get("DeviceIndex") == 0:
            return eni["NetworkInterfaceId"]
    return None


def client_token(eni_id: str, cfg: Config) -> str:
    # Same ENI + target + session number -> same token: a retried or racing call is a no-op.
    return f"ms-{eni_id}-{cfg.target_id}-{cfg.session_number}"[:64]


def ensure_session(ec2: Any, instance_id: str, cfg: Config) -> dict[str, Any]:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    if not instances:
        return {"action": "skipped", "reason": "instance-not-found", "instance_id": instance_id}
    instance = instances[0]
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags") or []}
    if not cfg.opted_in(tags):
        return {"action": "skipped", "reason": "not-opted-in", "instance_id": instance_id,
                "tag_key": cfg.tag_key}
    eni_id = primary_eni(instance)
    if eni_id is None:
        return {"action": "skipped", "reason": "no-primary-eni", "instance_id": instance_id}

    existing = ec2.describe_traffic_mirror_sessions(Filters=[
        {"Name": "network-interface-id", "Values": [eni_id]},
        {"Name": "traffic-mirror-target-id", "Values": [cfg.target_id]},
    ])["TrafficMirrorSessions"]
    if existing:
        return {"action": "exists", "instance_id": instance_id, "network_interface_id": eni_id,
                "traffic_mirror_session_id": existing[0]["TrafficMirrorSessionId"]}

    params: dict[str, Any] = {
        "NetworkInterfaceId": eni_id,
        "TrafficMirrorTargetId": cfg.target_id,
        "TrafficMirrorFilterId": cfg.filter_id,
        "SessionNumber": cfg.session_number,
        "Description": f"MirrorScope: {instance_id}",
        "ClientToken": client_token(eni_id, cfg),
        "TagSpecifications": [{
            "ResourceType": "traffic-mirror-session",
            "Tags": [
                {"Key": MANAGED_BY_TAG[0], "Value": MANAGED_BY_TAG[1]},
                {"Key": "mirrorscope:instance-id", "Value": instance_id},
            ],
        }],
    }
    if cfg.vni is not None:
        params["VirtualNetworkId"] = cfg.vni
    if cfg.packet_length is not None:
        params["PacketLength"] = cfg.packet_length
    session = ec2.create_traffic_mirror_session(**params)["TrafficMirrorSession"]
    return {"action": "created", "instance_id": instance_id, "network_interface_id": eni_id,
            "traffic_mirror_session_id": session["TrafficMirrorSessionId"],
            "virtual_network_id": session.get("VirtualNetworkId")}


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    request_id = getattr(context, "aws_request_id", None)
    try:
        instance_id = instance_id_from_event(event)
        if instance_id is None:
            result = {"action": "ignored", "reason": "not-an-instance-event",
                      "detail_type": event.get("detail-type")}
        else:
            cfg = Config.from_env()
            result = ensure_session(boto3.client("ec2"), instance_id, cfg)
    except Exception as exc:
        log("ERROR", "mirror-session-error", request_id=request_id,
            error=type(exc).__name__, message=str(exc), event_id=event.get("id"),
            detail_type=event.get("detail-type"), resources=event.get("resources"))
        raise
    log("INFO", "mirror-session", request_id=request_id, event_id=event.get("id"), **result)
    return result
