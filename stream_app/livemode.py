"""The analysis side of `mirrorscope collect --embedded`: the same core and options as
`mirrorscope analyze` (timeouts, HTTP, detectors), live output files (stream_app.sinks.live),
a one-line status every few seconds, and at the end the summary `analyze` prints and writes
(``summary.json``).

collectors.publishers.EmbeddedPublisher owns one of these; the collector's counters (frames
received, decoded, dropped by reason) come from its Stats.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import orjson

log = logging.getLogger("mirrorscope.collect")


def detect_config(path: str | None):
    """DetectConfig from a JSON/YAML file (None: defaults); ValueError on a bad file."""
    from stream_app.core.detectors import DetectConfig
    if not path:
        return DetectConfig()
    import yaml
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        return DetectConfig.from_dict(data)
    except (OSError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def core_config(cfg):
    """collectors.config.EmbeddedConfig -> the core's config, as `analyze` builds it."""
    from stream_app.core.flowtable import FlowConfig
    from stream_app.core.http import HttpConfig
    from stream_app.core.l7 import L7Config
    from stream_app.core.processor import CoreConfig
    return CoreConfig(
        flows=FlowConfig(idle_timeout=cfg.idle_timeout, tcp_idle_timeout=cfg.tcp_idle_timeout,
                         active_timeout=cfg.active_timeout, close_linger=cfg.close_linger,
                         max_flows=cfg.max_flows),
        l7=L7Config(http=HttpConfig(keep_credentials=cfg.keep_credentials)) if cfg.http else None,
        detect=detect_config(cfg.detect_config) if cfg.detect else None)


class LiveAnalysis:
    def __init__(self, cfg, stats, live: bool = True, clock=time.time):
        from stream_app.core.processor import Processor
        from stream_app.sinks.live import LiveOutputs

        self.cfg = cfg
        self.stats = stats
        self.live = live
        self.clock = clock
        self.core = Processor(core_config(cfg))
        self.out_dir = Path(cfg.out_dir)
        self.outputs = LiveOutputs(self.out_dir, flush_s=cfg.flush_s,
                                   rotate_bytes=int(cfg.rotate_mb * (1 << 20)),
                                   rotate_s=cfg.rotate_s)
        self._next_status = clock() + cfg.status_s if cfg.status_s > 0 else float("inf")

    def poll(self, flush: bool = False) -> None:
        now = self.clock()
        if flush:
            self.outputs.flush()
        self.outputs.poll(now)
        if now >= self._next_status:
            self._next_status = now + self.cfg.status_s
            log.info(self.status_line())

    def status_line(self) -> str:
        st, o = self.stats, self.outputs
        drops = sum(st.drops.values())
        return (f"status: {st.received:,} frames, {st.decoded:,} decoded, {drops:,} dropped | "
                f"{o.summary.flows:,} flows ended, {len(self.core.flows.flows):,} open | "
                f"{o.http_summary.transactions:,} HTTP | {o.counts.by_kind.get('dns', 0):,} DNS | "
                f"{o.counts.by_kind.get('tls', 0):,} TLS | {o.counts.by_kind.get('ssh', 0):,} SSH | "
                f"{o.alert_summary.alerts:,} alerts")

    def result(self):
        from stream_app.adapters.embedded import AnalyzeResult
        st = self.stats
        res = AnalyzeResult(files=[], flows=self.outputs.summary, http=self.outputs.http_summary,
                            alerts=self.outputs.alert_summary, records=self.outputs.counts,
                            detect=self.cfg.detect)
        res.frames = st.received
        res.decoded = st.decoded
        res.drops = +st.drops
        return res

    def close(self) -> None:
        """After the core's last results were written: close the files, write summary.json."""
        res = self.result()
        res.outputs = self.outputs.close()
        (self.out_dir / "summary.json").write_bytes(
            orjson.dumps(res.to_json(), option=orjson.OPT_INDENT_2) + b"\n")


def finish_summary(out_dir: str | Path, totals: dict, stream=None) -> dict | None:
    """In the parent, once every worker stopped: put the collector's final counters into
    summary.json (a worker wrote it with its own) and print it as `analyze` does."""
    p = Path(out_dir) / "summary.json"
    try:
        d = orjson.loads(p.read_bytes())
    except (OSError, ValueError):
        return None
    drops = {k: v for k, v in sorted((totals.get("drops") or {}).items()) if v}
    d.update(frames=totals.get("received", d.get("frames", 0)),
             decoded=totals.get("decoded", d.get("decoded", 0)),
             dropped=sum(drops.values()), drops=drops)
    p.write_bytes(orjson.dumps(d, option=orjson.OPT_INDENT_2) + b"\n")
    print_summary(d, stream or sys.stderr)
    return d


def result_from_json(d: dict):
    """An AnalyzeResult (for the terminal summary) back from summary.json."""
    from collections import Counter
    from types import SimpleNamespace

    from stream_app.core.summary import AlertSummary, FlowSummary, HttpSummary
    from stream_app.adapters.embedded import AnalyzeResult
    fs = FlowSummary(flows=d.get("flows", 0), packets=d.get("flow_packets", 0),
                     bytes=d.get("flow_bytes", 0), by_proto=Counter(d.get("flows_by_protocol", {})),
                     pairs=Counter({(t["src"], t["dst"]): t["bytes"] for t in d.get("top_talkers", [])}),
                     vnis=Counter({int(k): v for k, v in d.get("vnis", {}).items()}))
    hs = HttpSummary(transactions=d.get("http_transactions", 0),
                     by_class=Counter(d.get("http_by_status_class", {})),
                     tags=Counter(d.get("http_tags", {})), hosts=Counter(d.get("http_top_hosts", {})))
    al = AlertSummary(alerts=d.get("alerts", 0), by_type=Counter(d.get("alerts_by_type", {})),
                      first=[SimpleNamespace(**a) for a in d.get("alert_list", [])])
    res = AnalyzeResult(files=d.get("files", []), frames=d.get("frames", 0),
                        decoded=d.get("decoded", 0), drops=Counter(d.get("drops", {})),
                        problems=d.get("problems", []), flows=fs, http=hs, alerts=al,
                        detect=d.get("detectors", True), outputs=d.get("outputs", {}))
    return res


def print_summary(d: dict, stream) -> None:
    from rich.console import Console

    from stream_app.summary_view import print_summary
    print_summary(result_from_json(d), Console(file=stream, soft_wrap=True))
