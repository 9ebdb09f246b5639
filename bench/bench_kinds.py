"""What the result-kind registry (schemas/kinds.py) costs on the hot paths that now iterate it,
each against the hand-written code it replaced, measured in the same run:

1. encode_results (every record -> (kind, id, msgpack), the worker's and Kinesis consumer's
   per-batch work) vs the former three list comprehensions over flows, http and alerts;
2. LocalOutputs.write (analyze's files and summary) vs the former writer of three files.

Both on batches of flows and HTTP only (today's traffic: the new kinds are empty lists), so a
ratio near 1.0 means the registry adds nothing measurable where nothing new is produced.

    .venv/bin/python bench/bench_kinds.py [--batches 5000] [--batch 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402

from stream_app.adapters.embedded import LocalOutputs  # noqa: E402
from stream_app.core.processor import Results  # noqa: E402
from stream_app.core.summary import AlertSummary, FlowSummary, HttpSummary  # noqa: E402
from stream_app.runtime.cores import encode_results  # noqa: E402
from stream_app.sinks.localfiles import JsonlWriter  # noqa: E402
from tests.sink_helpers import make_flow, make_http  # noqa: E402


def encode_results_before(res: Results) -> list:
    """The code before the registry (stream_app/runtime/cores.py at main 1ca7910)."""
    enc = msgspec.msgpack.encode
    out = [("flows", f.flow_id.encode(), enc(f)) for f in res.flows]
    out += [("http", h.http_id.encode(), enc(h)) for h in res.http]
    out += [("alerts", a.alert_id.encode(), enc(a)) for a in res.alerts]
    return out


class LocalOutputsBefore:
    """LocalOutputs before the registry: three files, three summaries."""

    def __init__(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        self._flows = JsonlWriter(out_dir / "flows.jsonl")
        self._http = JsonlWriter(out_dir / "http.jsonl")
        self._alerts = JsonlWriter(out_dir / "alerts.jsonl")
        self.summary, self.http_summary, self.alert_summary = FlowSummary(), HttpSummary(), AlertSummary()

    def write(self, results: Results) -> None:
        if results.flows:
            self._flows.write(results.flows)
            self.summary.add(results.flows)
        if results.http:
            self._http.write(results.http)
            self.http_summary.add(results.http)
        if results.alerts:
            self._alerts.write(results.alerts)
            self.alert_summary.add(results.alerts)

    def close(self) -> None:
        for w in (self._flows, self._http, self._alerts):
            w.close()


def median_times(before, after, repeat: int) -> tuple[float, float]:
    """Median seconds of each, the two runs alternating (the machine is shared: load that
    comes and goes then hits both alike)."""
    tb, ta = [], []
    for _ in range(repeat):
        for fn, times in ((before, tb), (after, ta)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(tb), statistics.median(ta)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=9)
    a = ap.parse_args(argv)
    batches = [Results(flows=[make_flow(i * a.batch + j) for j in range(a.batch)],
                       http=[make_http(i * a.batch + j) for j in range(a.batch // 2)])
               for i in range(a.batches)]
    assert [encode_results(b) for b in batches[:50]] == [encode_results_before(b) for b in batches[:50]]

    def enc(fn):
        return lambda: [fn(b) for b in batches]
    t_before, t_after = median_times(enc(encode_results_before), enc(encode_results), a.repeat)
    n = a.batches * (a.batch + a.batch // 2)
    print(f"encode_results: {n:,} records in {a.batches:,} batches: before (3 comprehensions) "
          f"{t_before * 1e3:.1f} ms, registry {t_after * 1e3:.1f} ms, ratio {t_after / t_before:.3f}")

    def write(cls):
        def go():
            with tempfile.TemporaryDirectory() as d:
                o = cls(Path(d))
                for b in batches:
                    o.write(b)
                o.close()
        return go
    w_before, w_after = median_times(write(LocalOutputsBefore), write(LocalOutputs), a.repeat)
    print(f"LocalOutputs.write: before (3 files) {w_before * 1e3:.1f} ms, registry (6 files + "
          f"counts) {w_after * 1e3:.1f} ms, ratio {w_after / w_before:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
