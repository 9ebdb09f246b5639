"""Embedded mode: capture files -> decoder -> the core -> local files, in one process.
No broker, no Redis, no AWS: the first thing a new user runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from collectors.capture import linktype_name, open_capture
from collectors.decode import SUPPORTED_LINKTYPES, Decoder, PayloadPolicy
from collectors.source import capture_batches
from stream_app.core.detectors import DetectConfig
from stream_app.core.flowtable import FlowConfig
from stream_app.core.l7 import L7Config
from stream_app.core.processor import EXPIRE_EVERY, CoreConfig, Processor, Results
from schemas.kinds import KINDS, NAMES
from stream_app.core.summary import AlertSummary, FlowSummary, HttpSummary, RecordCounts
from stream_app.sinks.localfiles import JsonlWriter

@dataclass
class AnalyzeResult:
    files: list[str] = field(default_factory=list)
    frames: int = 0
    decoded: int = 0
    drops: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    flows: FlowSummary = field(default_factory=FlowSummary)
    http: HttpSummary = field(default_factory=HttpSummary)
    alerts: AlertSummary = field(default_factory=AlertSummary)
    records: RecordCounts = field(default_factory=RecordCounts)
    """Records written per kind (dns, tls, ssh ... as well as the three above)."""
    detect: bool = True
    outputs: dict[str, str] = field(default_factory=dict)
    core: dict = field(default_factory=dict)
    """The processing core's counters (Processor.stats: evictions, errors caught ...)."""

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def to_json(self) -> dict:
        return {
            "files": self.files, "frames": self.frames, "decoded": self.decoded,
            "dropped": self.dropped, "drops": {k: v for k, v in sorted(self.drops.items()) if v},
            "problems": self.problems,
            "flows": self.flows.flows, "flow_packets": self.flows.packets,
            "flow_bytes": self.flows.bytes, "flows_by_protocol": dict(self.flows.by_proto),
            "top_talkers": [{"src": a, "dst": b, "bytes": v} for a, b, v in self.flows.top_talkers()],
            "vnis": {str(k): v for k, v in self.flows.vnis.items()},
            "http_transactions": self.http.transactions,
            "http_by_status_class": dict(self.http.by_class),
            "http_tags": dict(self.http.tags),
            "http_top_hosts": dict(self.http.hosts.most_common(10)),
            "detectors": self.detect,
            "alerts": self.alerts.alerts,
            "alerts_by_type": dict(self.alerts.by_type),
            "alert_list": self.alerts.listing(),
            "dns_transactions": self.records.by_kind.get("dns", 0),
            "tls_handshakes": self.records.by_kind.get("tls", 0),
            "ssh_sessions": self.records.by_kind.get("ssh", 0),
            "records": self.records.as_dict(),
            "core": self.core,
            "outputs": self.outputs,
        }


def core_problems(core: Processor) -> list[str]:
    """What the core caught and counted instead of crashing, as summary warnings."""
    st = core.stats()
    out = []
    for k, what in (("packet_errors", "packets whose processing failed (counted, skipped)"),
                    ("l7_errors", "flows whose HTTP analysis failed (their records tagged "
                                  "analyzer_error)"),
                    ("detector_errors", "detector runs that failed (their alerts lost)")):
        if st.get(k):
            out.append(f"{st[k]:,} {what}")
    if st.get("flows_evicted"):
        out.append(f"{st['flows_evicted']:,} flows ended early to stay under max_flows "
                   f"(end_reason evicted)")
    out += [f"first error: {e}" for e in core.errors[:3]]
    return out


def payload_policy(l7: L7Config | None) -> PayloadPolicy:
    """HTTP is recognised on any port, so it needs every TCP payload; flows need none."""
    return PayloadPolicy(max_bytes=65535, ports=None) if l7 is not None else PayloadPolicy()


class LocalOutputs:
    """Writes the core's results to a folder, one <kind>.jsonl per result kind
    (schemas.kinds: flows, http, alerts, dns, tls, ssh), and keeps the summary's aggregates.
    Used by `analyze` and by a collector running in embedded mode."""

    def __init__(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.paths = {k.name: out_dir / f"{k.name}.jsonl" for k in KINDS}
        self._writers = {name: JsonlWriter(path) for name, path in self.paths.items()}
        self.flows_path, self.http_path = self.paths["flows"], self.paths["http"]
        self.alerts_path = self.paths["alerts"]
        self.summary = FlowSummary()
        self.http_summary = HttpSummary()
        self.alert_summary = AlertSummary()
        self.counts = RecordCounts()

    def write(self, results: Results) -> None:
        writers, counted = self._writers, self.counts.by_kind
        for name in NAMES:
            recs = getattr(results, name, None)
            if recs:
                writers[name].write(recs)
                counted[name] += len(recs)
        if results.flows:
            self.summary.add(results.flows)
        if results.http:
            self.http_summary.add(results.http)
        alerts = getattr(results, "alerts", None)
        if alerts:
            self.alert_summary.add(alerts)

    def close(self) -> dict[str, str]:
        for w in self._writers.values():
            w.close()
        return {name: str(path) for name, path in self.paths.items()}


def analyze(paths: list[str | Path], out_dir: Path, flow_config: FlowConfig | None = None,
            decoder: Decoder | None = None, fast: bool = True,
            progress: Callable[[int], None] | None = None,
            l7: L7Config | None = L7Config(), extra_outputs: list | None = None,
            detect: DetectConfig | None = DetectConfig()) -> AnalyzeResult:
    """Analyze the captures in order as one stream of packets (give rotated captures in time
    order) and write out_dir/<kind>.jsonl (flows, http, alerts, dns, tls, ssh) and out_dir/summary.json.
    With ``l7=None`` only flow records are made (and no payload is kept); ``extra_outputs``
    (stream_app.sinks.tee.aws_outputs) also deliver the records to S3 and CloudWatch.

    Raises CaptureError before writing anything if a file cannot be opened, and OSError if
    the output folder cannot be written."""
    readers = [open_capture(p) for p in paths]  # fail on a bad file before any work
    decoder = decoder or Decoder(payload=payload_policy(l7))
    core = Processor(CoreConfig(flows=flow_config or FlowConfig(), l7=l7, detect=detect))
    outputs = LocalOutputs(out_dir)
    if extra_outputs:  # S3 and/or CloudWatch beside the local files
        from stream_app.sinks.tee import TeeOutputs
        outputs = TeeOutputs(outputs, *extra_outputs)
    res = AnalyzeResult(files=[str(p) for p in paths], flows=outputs.summary,
                        http=outputs.http_summary, alerts=outputs.alert_summary,
                        records=outputs.counts,
                        detect=detect is not None)
    try:
        for reader in readers:
            done_bytes = 0
            n = 0
            for batch in capture_batches(reader, decoder, fast=fast):
                outputs.write(core.process(batch))
                n += 1
                if n % EXPIRE_EVERY == 0:
                    outputs.write(core.tick())
                if progress is not None:
                    pos = reader.position()
                    progress(pos - done_bytes)
                    done_bytes = pos
            if progress is not None:
                progress(reader.size - done_bytes)
            for lt in sorted(reader.stats.linktypes):
                if lt not in SUPPORTED_LINKTYPES:
                    res.problems.append(
                        f"{reader.name}: {linktype_name(lt)} is not supported; its frames were "
                        f"counted as dropped (supported: Ethernet, raw IP, BSD null/loopback, "
                        f"Linux cooked)")
            res.problems.extend(reader.stats.problems)
            res.frames += reader.stats.frames
            reader.close()
        outputs.write(core.finish())
    finally:
        res.outputs = outputs.close()
    res.core = core.stats()
    res.problems.extend(core_problems(core))
    res.decoded = decoder.decoded
    res.drops = +decoder.drops
    (out_dir / "summary.json").write_bytes(
        orjson.dumps(res.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    return res
