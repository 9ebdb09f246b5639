#!/usr/bin/env python3
"""What the detectors cost: `mirrorscope analyze` on one capture with and without them.

usage: python bench/bench_detect.py [--capture FILE] [--repeat N] [--core N] [--no-http]

Runs, alternating, REPEAT times each (default 5), pinned to one core (taskset -c CORE):
  with     <venv>/bin/mirrorscope analyze FILE --out TMP --no-progress --detect
  without  <venv>/bin/mirrorscope analyze FILE --out TMP --no-progress --no-detect
(HTTP analysis on in both, so http_attack has its input; --no-http measures flows only.)
Reports the median wall time and packets/s of each, the slowdown ratio (target: at most
1.20), the alerts found, and one JSON line with every number.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_CAPTURE = BENCH / ".data" / "mirror-http-500k.pcap"
TARGET = 1.20


def run_once(mirrorscope: Path, capture: Path, detect: bool, http: bool, core: int) -> tuple[float, dict]:
    out = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    try:
        cmd = [str(mirrorscope), "analyze", str(capture), "--out", str(out), "--no-progress",
               "--json", "--detect" if detect else "--no-detect"]
        if not http:
            cmd.append("--no-http")
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", str(core)] + cmd
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            sys.exit(f"analyze failed: {r.stderr}")
        return wall, json.loads(r.stdout)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--no-http", action="store_true")
    args = ap.parse_args()
    if not args.capture.is_file():
        sys.exit(f"{args.capture} not found: make it with bench/make_capture.sh (root)")
    ms = Path(sys.executable).with_name("mirrorscope")
    times: dict[str, list[float]] = {"with": [], "without": []}
    summary = {}
    run_once(ms, args.capture, True, not args.no_http, args.core)  # warm the page cache
    for _ in range(args.repeat):
        for name, det in (("with", True), ("without", False)):
            wall, s = run_once(ms, args.capture, det, not args.no_http, args.core)
            times[name].append(wall)
            if det:
                summary = s
    pkts = summary["decoded"]
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["with"] / med["without"]
    print(f"capture: {args.capture} ({pkts:,} packets, {summary['flows']:,} flows, "
          f"{summary['http_transactions']:,} HTTP transactions)")
    for k in ("without", "with"):
        print(f"  detectors {k:8s} median {med[k]:.3f} s  {pkts / med[k]:>12,.0f} packets/s  "
              f"(runs: {', '.join(f'{x:.3f}' for x in times[k])})")
    print(f"  slowdown with detectors: {ratio:.3f}x  (target <= {TARGET:.2f}x: "
          f"{'OK' if ratio <= TARGET else 'MISSED'})")
    print(f"  alerts: {summary['alerts']} {summary.get('alerts_by_type', {})}")
    print(json.dumps({"capture": str(args.capture), "packets": pkts, "median_s": med,
                      "runs_s": times, "ratio": ratio, "target": TARGET,
                      "alerts": summary["alerts"], "http": not args.no_http}))
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
