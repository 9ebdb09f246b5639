#!/usr/bin/env python3
"""What the application-layer parsers cost: `mirrorscope analyze` by mode, on one capture.

usage: python bench/bench_l7.py [--capture FILE ...] [--repeat N] [--core N] [--no-half]

For each capture (default: bench/.data/mirror-http-500k.pcap, made by bench/make_capture.sh if
absent; add the DNS and TLS captures bench/make_dns_capture.sh and bench/make_tls_capture.sh
make), runs in this one command, each as a subprocess pinned to one core (taskset -c CORE,
default 0), the median of N runs:

  flows    analyze --no-http --no-detect          the baseline: flow records only
  http     analyze --protocols http --no-detect   HTTP alone (the parser the issue measured)
  each     analyze --protocols P --no-detect      for P in tls, dns, ssh (with --each)
  default  analyze                                every parser and every detector (as shipped)

and prints each mode's time over the baseline's, measured in the same run (issue 19's target:
default <= 1.5x flows on the HTTP capture), then the memory-flatness check: `default` on the
whole capture vs its first half (peak RSS). One JSON line with every number comes last.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pcaputil  # noqa: E402
from bench_analyze import (DEFAULT_CAPTURE, BenchError, ensure_capture, find_ours, log,  # noqa: E402
                           measure, warm_cache)

MODES = {
    "flows": ["--no-http", "--no-detect"],
    "http": ["--protocols", "http", "--no-detect"],
    "tls": ["--protocols", "tls", "--no-detect"],
    "dns": ["--protocols", "dns", "--no-detect"],
    "ssh": ["--protocols", "ssh", "--no-detect"],
    "default": [],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", type=Path, action="append",
                    help="capture file (repeatable; default the 500k HTTP capture)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--core", type=int, default=0, help="CPU to pin to (-1: none)")
    ap.add_argument("--each", action="store_true", help="also time tls, dns and ssh alone")
    ap.add_argument("--no-half", action="store_true", help="skip the memory-flatness run")
    args = ap.parse_args(argv)
    core = None if args.core < 0 else args.core
    captures = args.capture or [DEFAULT_CAPTURE]
    ours = find_ours()
    modes = ["flows", "http"] + (["tls", "dns", "ssh"] if args.each else []) + ["default"]
    report = {"captures": []}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-l7-") as tmpd:
            tmp = Path(tmpd)
            for capture in captures:
                if capture == DEFAULT_CAPTURE:
                    ensure_capture(capture, 500_000)
                if not capture.is_file():
                    raise BenchError(f"{capture}: no such capture")
                warm_cache(capture)
                packets = pcaputil.count_packets(str(capture))

                def cmd_for(path: Path, extra: list[str]):
                    def make():
                        out = Path(tempfile.mkdtemp(dir=tmp))
                        return ([str(ours), "analyze", str(path), "--out", str(out / "o"),
                                 "--no-progress", "--json"] + extra, out)
                    return make

                res = {m: measure(m, cmd_for(capture, MODES[m]), args.repeat, core, tmp, packets)
                       for m in modes}
                base = res["flows"]["wall_s"]
                row = {"capture": str(capture), "packets": packets,
                       "modes": {m: {"wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"],
                                     "over_flows": round(r["wall_s"] / base, 3)}
                                 for m, r in res.items()}}
                if not args.no_half:
                    half = tmp / "half.pcap"
                    n = pcaputil.write_prefix(str(capture), str(half), packets // 2)
                    h = measure("default-half", cmd_for(half, []), args.repeat, core, tmp, n)
                    full_mb = res["default"]["peak_rss_mb"]
                    row["memory"] = {"full_peak_rss_mb": full_mb, "half_peak_rss_mb": h["peak_rss_mb"],
                                     "full_over_half": round(full_mb / h["peak_rss_mb"], 3)}
                report["captures"].append(row)
                _print(row)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


def _print(row: dict) -> None:
    print(f"\n{row['capture']} ({row['packets']:,} packets)")
    print(f"{'mode':<9} {'wall s':>8} {'x flows':>8} {'peak MB':>8}")
    for m, r in row["modes"].items():
        print(f"{m:<9} {r['wall_s']:>8.3f} {r['over_flows']:>8.3f} {r['peak_rss_mb']:>8.1f}")
    if "memory" in row:
        mem = row["memory"]
        print(f"memory: default {mem['full_peak_rss_mb']:.1f} MB on the whole capture vs "
              f"{mem['half_peak_rss_mb']:.1f} MB on its first half: {mem['full_over_half']:.2f}x")
    print(f"default/flows = {row['modes']['default']['over_flows']:.2f}x (target <= 1.5x); "
          f"http/flows = {row['modes']['http']['over_flows']:.2f}x")


if __name__ == "__main__":
    shutil.which("taskset") or log("taskset not found: runs are pinned with sched_setaffinity")
    sys.exit(main())
