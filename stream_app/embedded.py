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
from stream_app.core.flowtable import FlowConfig, FlowTable
from stream_app.core.summary import FlowSummary
from stream_app.sinks.localfiles import JsonlWriter

EXPIRE_EVERY = 8  # batches between timeout sweeps


@dataclass
class AnalyzeResult:
    files: list[str] = field(default_factory=list)
    frames: int = 0
    decoded: int = 0
    drops: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    flows: FlowSummary = field(default_factory=FlowSummary)
    outputs: dict[str, str] = field(default_factory=dict)

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
            "outputs": self.outputs,
        }


def analyze(paths: list[str | Path], out_dir: Path, flow_config: FlowConfig | None = None,
            decoder: Decoder | None = None, fast: bool = True,
            progress: Callable[[int], None] | None = None) -> AnalyzeResult:
    """Analyze the captures in order as one stream of packets (give rotated captures in time
    order) and write out_dir/flows.jsonl and out_dir/summary.json.

    Raises CaptureError before writing anything if a file cannot be opened, and OSError if
    the output folder cannot be written."""
    readers = [open_capture(p) for p in paths]  # fail on a bad file before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    decoder = decoder or Decoder(payload=PayloadPolicy())
    table = FlowTable(flow_config or FlowConfig())
    res = AnalyzeResult(files=[str(p) for p in paths])
    flows_path = out_dir / "flows.jsonl"
    with JsonlWriter(flows_path) as flows_out:
        def emit(records):
            if records:
                flows_out.write(records)
                res.flows.add(records)

        for reader in readers:
            done_bytes = 0
            n = 0
            for batch in capture_batches(reader, decoder, fast=fast):
                emit(table.add_batch(batch))
                n += 1
                if n % EXPIRE_EVERY == 0:
                    emit(table.expire())
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
        emit(table.flush())
    res.decoded = decoder.decoded
    res.drops = +decoder.drops
    res.outputs = {"flows": str(flows_path)}
    (out_dir / "summary.json").write_bytes(
        orjson.dumps(res.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    return res

