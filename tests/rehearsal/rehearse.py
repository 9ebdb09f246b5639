"""One rehearsal: render the chart with an SRE's values, run every rendered workload as its pod
would run, replay a capture through the rendered collector, and read what lands in AWS (moto):
Parquet objects in the results bucket, CloudWatch metrics and alert log events."""

from __future__ import annotations

import io
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from schemas.kinds import KINDS, NAMES
from tests.rehearsal.pods import Container, containers, render
from tests.rehearsal.runner import Pod, VENV_BIN

# Variables a pod gets from Kubernetes itself (not settings of MirrorScope).
PLUMBING = {"HOME", "POD_NAME"}


@dataclass
class Deployment:
    pods: dict[str, Container]
    running: list[Pod] = field(default_factory=list)

    @classmethod
    def render(cls, *values: Path, sets: dict | None = None) -> "Deployment":
        cs = containers(render(*values, sets=sets))
        return cls({c.component: c for c in cs})

    def start(self, component: str, workdir: Path, overrides: dict, replica: int = 0,
              extra_args: list[str] | None = None, tmp_files: list[Path] = ()) -> Pod:
        p = Pod(self.pods[component], f"{component}-{replica}", workdir, overrides, extra_args,
                tmp_files)
        self.running.append(p.start())
        return p

    def stop_all(self) -> None:
        for p in reversed(self.running):
            try:
                p.stop(30)
            except Exception:
                pass

    def unread_variables(self) -> dict[str, str]:
        """Rendered settings no process looked up: a chart value the code does not read."""
        read = set().union(*(p.variables_read() for p in self.running))
        rendered = {}
        for c in self.pods.values():
            for k, src in c.env_sources.items():
                if k not in PLUMBING:
                    rendered[k] = src
        return {k: src for k, src in rendered.items() if k not in read}


def chart_values(*values: Path) -> dict:
    """The chart's defaults with the SRE's values over them (what the stack's names come from:
    Terraform feeds the same names to the stack and to the values)."""
    import yaml

    from tests.rehearsal.pods import CHART

    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    vals = yaml.safe_load((CHART / "values.yaml").read_text())
    for v in values:
        vals = merge(vals, yaml.safe_load(Path(v).read_text()) or {})
    return vals


def analyze(capture: Path, out: Path) -> dict[str, list[dict]]:
    subprocess.run([str(VENV_BIN / "mirrorscope"), "analyze", str(capture), "--out", str(out),
                    "--json"], check=True, capture_output=True, timeout=300)
    return {k: [json.loads(x) for x in (out / f"{k}.jsonl").read_text().splitlines()]
            for k in NAMES}


def parquet_rows(s3, bucket: str, table: str) -> list[dict]:
    import pyarrow.parquet as pq
    rows = []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in pages:
        for o in page.get("Contents", []):
            key = o["Key"]
            if f"{table}/dt=" not in key or not key.endswith(".parquet"):
                continue
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            rows += pq.read_table(io.BytesIO(body)).to_pylist()
    return rows


def wait_for(what: str, check, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def group_lag(bootstrap: str, group: str, topics: list[str]) -> int | None:
    """Messages of ``topics`` the consumer group has not committed (None: nothing committed)."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        committed = a.list_group_offsets(group).get(group, {})  # kafka-python 3: {group: {tp: ...}}
        parts = [TopicPartition(t, p) for t in topics for p in c.partitions_for_topic(t) or []]
        end = c.end_offsets(parts)
        if not committed:
            return None if any(end.values()) else 0
        return sum(end[tp] - (committed[tp].offset if tp in committed else 0) for tp in parts)
    finally:
        c.close()
        a.close()


def assert_delivered(ref: dict[str, list[dict]], moto, vals: dict, log_group: str) -> None:
    """What `mirrorscope analyze` found (``ref``) is what landed in AWS: the same flow, HTTP and
    alert ids as Parquet in the results bucket (flows with the same counts), CloudWatch metrics
    in the namespace, and an alert log event for each alert."""
    from tests.sink_helpers import client
    s3 = client("s3", moto)
    got = {k.table: parquet_rows(s3, vals["sinks"]["s3"]["bucket"], k.table) for k in KINDS}
    assert ref["alerts"], "the capture must raise an alert"
    for table, key in ((k.table, k.id_field) for k in KINDS):
        assert {r[key] for r in got[table]} == {r[key] for r in ref[table]}, table
    want = {f["flow_id"]: f for f in ref["flows"]}
    for r in got["flows"]:
        f = want[r["flow_id"]]
        assert (r["packets"], r["bytes"], r["srcaddr"], r["dstport"]) == (
            f["packets"], f["bytes"], f["srcaddr"], f["dstport"])
    cw = client("cloudwatch", moto)
    assert cw.list_metrics(Namespace=vals["sinks"]["cloudwatch"]["namespace"])["Metrics"]
    events = client("logs", moto).filter_log_events(logGroupName=log_group)["events"]
    for a in ref["alerts"]:
        assert any(a["alert_id"] in e["message"] for e in events), a["alert_id"]


def provision_results(moto, vals: dict) -> str:
    """What Terraform makes before the chart for the results: the bucket (storage module) and
    the alert log group (alarms module), named as the values name them. Returns the group."""
    from tests.sink_helpers import client
    client("s3", moto).create_bucket(Bucket=vals["sinks"]["s3"]["bucket"])
    log_group = vals["sinks"]["cloudwatch"]["logGroup"]
    client("logs", moto).create_log_group(logGroupName=log_group)
    return log_group
