#!/usr/bin/env python3
"""What the TLS (and SSH) analysis costs: the embedded analysis of a mirrored TLS capture,
with TLS analysed and without, against flows only, measured in the same run.

usage: python bench/bench_tls.py [--capture FILE] [--repeat N]

The capture comes from bench/make_tls_capture.sh (root; the mirror lab, openssl s_server and
curl: full TLS 1.2/1.3 handshakes each followed by 64 KB of encrypted bulk). Modes, run
alternating REPEAT times each (default 3), in this process
(stream_app.adapters.embedded.analyze, the code `mirrorscope analyze` runs):
  flows    l7=None, no detectors            (the baseline: no payload kept)
  no-tls   L7Config(protocols={http,ssh,dns}), no detectors (TLS not recognised: its
           flows are held for their first segments, then left)
  tls      L7Config() (all analyzers), no detectors
  default  L7Config() and DetectConfig()    (what `mirrorscope analyze` does)
Prints the median seconds of each, the ratios against flows, the TLS records made, and one
JSON line with every number.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_app.adapters.embedded import analyze  # noqa: E402
from stream_app.core.detectors import DetectConfig  # noqa: E402
from stream_app.core.l7 import L7Config  # noqa: E402

BENCH = Path(__file__).resolve().parent
DEFAULT_CAPTURE = BENCH / ".data" / "mirror-tls.pcap"
MODES = {
    "flows": dict(l7=None, detect=None),
    "no-tls": dict(l7=L7Config(protocols=frozenset({"http", "ssh", "dns"})), detect=None),
    "tls": dict(l7=L7Config(), detect=None),
    "default": dict(l7=L7Config(), detect=DetectConfig()),
}


def run_once(capture: Path, mode: str) -> tuple[float, object]:
    out = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    try:
        t = time.perf_counter()
        res = analyze([capture], out, **MODES[mode])
        return time.perf_counter() - t, res
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not args.capture.is_file():
        sys.exit(f"{args.capture} not found: make it with bench/make_tls_capture.sh (root)")
    # Count what the TLS analysis made once, outside the timed runs.
    from tests.l7_records import records
    recs = records(args.capture)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    frames = 0
    for _ in range(args.repeat):
        for m in MODES:
            wall, res = run_once(args.capture, m)
            times[m].append(wall)
            frames = res.frames
    med = {m: statistics.median(v) for m, v in times.items()}
    for m in MODES:
        print(f"{m:8s} {med[m]:7.2f} s  {frames / med[m]:9,.0f} packets/s  "
              f"x{med[m] / med['flows']:.2f} vs flows")
    tls_only = med["tls"] / med["no-tls"]
    print(f"TLS analysis on/off: x{tls_only:.2f}; {len(recs.tls)} tls records "
          f"({sum(t.established for t in recs.tls)} established), {frames:,} packets")
    print(json.dumps({"capture": str(args.capture), "packets": frames, "repeat": args.repeat,
                      "median_s": med, "ratio_vs_flows": {m: med[m] / med["flows"] for m in med},
                      "tls_on_off": tls_only, "tls_records": len(recs.tls)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
