"""VNI enrichment: VNI -> mirror session, source ENI, instance, VPC, subnet, account, region.

On AWS the VNI names a traffic mirror session (one per mirrored ENI, unless sessions share a
VNI on purpose). The mapping comes from a file, from the EC2 API, or both (the file wins):

- a mapping file, YAML or JSON::

      vnis:
        1234: {session_id: tms-0a1b..., interface_id: eni-0c2d..., instance_id: i-0e3f...,
               vpc_id: vpc-..., subnet_id: subnet-..., account_id: "123456789012",
               region: eu-west-1, az_id: euw1-az1}

  (or a plain mapping of VNI to those fields, or a list of objects with a ``vni`` field);
- discovery through EC2: DescribeTrafficMirrorSessions gives each session's VNI and ENI,
  DescribeNetworkInterfaces gives the ENI's VPC, subnet, instance, owner and zone. It runs in a
  background thread (never in the packet path), refreshes every ``refresh_s`` seconds, and a
  VNI it does not know triggers an early refresh at most once a minute.

Lookups are dictionary reads. Flow records take these fields (interface_id, instance_id,
vpc_id, subnet_id, account_id, region, az_id) where the flow table left them empty.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import msgspec
import yaml

log = logging.getLogger("mirrorscope.collect.enrich")

MISS_REFRESH_S = 60.0


class VniInfo(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    session_id: str | None = None
    interface_id: str | None = None
    instance_id: str | None = None
    vpc_id: str | None = None
    subnet_id: str | None = None
    account_id: str | None = None
    region: str | None = None
    az_id: str | None = None
    availability_zone: str | None = None
    source_ip: str | None = None
    """The mirrored ENI's primary private IP, the outer source of its VXLAN: the collectors
    accept VXLAN from it (collectors.worker.SourceCheck)."""


FLOW_FIELDS = ("interface_id", "instance_id", "vpc_id", "subnet_id", "account_id", "region",
               "az_id")


def load_mapping_file(path: str | Path) -> dict[int, VniInfo]:
    p = Path(path)
    text = p.read_text()
    data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    if isinstance(data, dict) and "vnis" in data:
        data = data["vnis"]
    out: dict[int, VniInfo] = {}
    if isinstance(data, list):
        for item in data:
            item = dict(item)
            vni = int(item.pop("vni"))
            out[vni] = msgspec.convert(item, VniInfo, str_keys=True)
    elif isinstance(data, dict):
        for k, v in data.items():
            out[int(k)] = msgspec.convert(v or {}, VniInfo)
    elif data is not None:
        raise ValueError(f"{p}: expected a mapping of VNI to fields, or a list")
    return out


def discover(ec2) -> dict[int, VniInfo]:
    """VNI -> info for every traffic mirror session the credentials can see."""
    sessions = []
    for page in ec2.get_paginator("describe_traffic_mirror_sessions").paginate():
        sessions.extend(page.get("TrafficMirrorSessions", []))
    enis: dict[str, dict] = {}
    ids = sorted({s["NetworkInterfaceId"] for s in sessions if s.get("NetworkInterfaceId")})
    for i in range(0, len(ids), 100):
        chunk = ids[i:i + 100]
        try:
            resp = ec2.describe_network_interfaces(NetworkInterfaceIds=chunk)
            for n in resp.get("NetworkInterfaces", []):
                enis[n["NetworkInterfaceId"]] = n
        except Exception as exc:  # one deleted ENI fails the whole call: ask one by one
            log.debug("describe_network_interfaces batch failed (%s); asking one by one", exc)
            for eni in chunk:
                try:
                    resp = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])
                    for n in resp.get("NetworkInterfaces", []):
                        enis[n["NetworkInterfaceId"]] = n
                except Exception:
                    pass
    region = ec2.meta.region_name
    out: dict[int, VniInfo] = {}
    for s in sessions:
        vni = s.get("VirtualNetworkId")
        if vni is None:
            continue
        eni = enis.get(s.get("NetworkInterfaceId", ""), {})
        out[int(vni)] = VniInfo(
            session_id=s.get("TrafficMirrorSessionId"),
            interface_id=s.get("NetworkInterfaceId"),
            instance_id=(eni.get("Attachment") or {}).get("InstanceId"),
            vpc_id=eni.get("VpcId"),
            subnet_id=eni.get("SubnetId"),
            account_id=eni.get("OwnerId") or s.get("OwnerId"),
            region=region,
            availability_zone=eni.get("AvailabilityZone"),
            az_id=eni.get("AvailabilityZoneId"),
            source_ip=eni.get("PrivateIpAddress"),
        )
    return out


class Enricher:
    """Thread-safe enough for its use: the table is replaced whole, never mutated in place."""

    def __init__(self, mapping: dict[int, VniInfo] | None = None, ec2=None,
                 refresh_s: float = 300.0):
        self._file = dict(mapping or {})
        self._table: dict[int, VniInfo] = dict(self._file)
        self._sources: tuple[dict, frozenset[str]] = ({}, frozenset())
        self._ec2 = ec2
        self._refresh_s = refresh_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_miss_refresh = 0.0
        self._thread: threading.Thread | None = None
        self.lookups_failed = 0
        self.refreshes = 0
        self.refresh_errors = 0

    @classmethod
    def from_config(cls, cfg) -> Enricher | None:
        """cfg: collectors.config.EnrichmentConfig; None when enrichment is off."""
        if not cfg.mapping_file and not cfg.discover:
            return None
        mapping = load_mapping_file(cfg.mapping_file) if cfg.mapping_file else {}
        ec2 = None
        if cfg.discover:
            import os

            import boto3
            ec2 = boto3.client("ec2", region_name=cfg.region or os.environ.get("AWS_REGION"),
                               endpoint_url=cfg.endpoint_url)
        return cls(mapping, ec2, cfg.refresh_s)

    def start(self) -> None:
        if self._ec2 is not None and self._thread is None:
            self.refresh()  # once up front, so the first packets already find their VNI
            self._thread = threading.Thread(target=self._run, name="vni-discovery", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def refresh(self) -> None:
        try:
            found = discover(self._ec2)
        except Exception as exc:
            self.refresh_errors += 1
            log.warning("VNI discovery through EC2 failed: %s", exc)
            return
        table = dict(found)
        table.update(self._file)
        self._table = table
        self.refreshes += 1
        log.info("VNI discovery: %d sessions", len(found))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._refresh_s)
            self._wake.clear()
            if not self._stop.is_set():
                self.refresh()

    def get(self, vni: int | None) -> VniInfo | None:
        if vni is None:
            return None
        info = self._table.get(vni)
        if info is None:
            self.lookups_failed += 1
            if self._ec2 is not None:
                now = time.monotonic()
                if now - self._last_miss_refresh > MISS_REFRESH_S:
                    self._last_miss_refresh = now
                    self._wake.set()
        return info

    def table(self) -> dict[int, VniInfo]:
        return self._table

    def mirror_sources(self) -> frozenset[str]:
        """Outer source IPs of the known mirror sessions: discovered in EC2, or a mapping-file
        entry's ``source_ip`` (configuration, like source_cidrs)."""
        table, found = self._sources
        if table is not self._table:
            table = self._table
            found = frozenset(i.source_ip for i in table.values() if i.source_ip)
            self._sources = (table, found)
        return found

    def fill_flow(self, f) -> None:
        """Set a FlowRecord's account/ENI/VPC fields from its VNI where they are empty."""
        info = self.get(f.vni)
        if info is None:
            return
        for name in FLOW_FIELDS:
            v = getattr(info, name)
            if v is not None and getattr(f, name, None) is None:
                setattr(f, name, v)

    def header_for(self, vnis) -> bytes | None:
        """JSON {vni: {fields}} for the VNIs of a batch that are known (Kafka header, Kinesis
        tag), or None."""
        out = {}
        for v in vnis:
            info = self._table.get(v) if v is not None else None
            if info is not None:
                out[str(v)] = msgspec.to_builtins(info)
        return msgspec.json.encode(out) if out else None
