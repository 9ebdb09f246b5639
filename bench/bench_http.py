#!/usr/bin/env python3
"""HTTP extraction: `mirrorscope analyze` (flows + HTTP) against tshark on the same capture.

usage: python bench/bench_http.py [--capture FILE] [--repeat N] [--core N]

Both run pinned to one core, in the same run, on bench/.data/mirror-http-500k.pcap (made by
bench/make_capture.sh if absent):
  ours    <venv>/bin/mirrorscope analyze FILE --out TMP --no-progress --no-detect
          (flows and HTTP; the detectors' cost has its own benchmark, bench_detect.py)
  tshark  tshark -n -r FILE -Y http.request -T fields -e http.request.method -e http.host
          -e http.request.uri
It checks that both found the same number of requests, then prints packets/s of each and the
ratio ours/tshark (the issue's target: at least 10).
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
                           run_measured, warm_cache)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE)
    ap.add_argument("--repeat", type=int, default=1, help="runs each; the fastest is kept")
    ap.add_argument("--core", type=int, default=0)
    args = ap.parse_args(argv)
    tshark = shutil.which("tshark")
    if not tshark:
        print("bench_http: tshark is required (apt-get install tshark)", file=sys.stderr)
        return 2
    try:
        ensure_capture(args.capture, 500_000)
        ours = find_ours()
    except BenchError as e:
        print(f"bench_http: error: {e}", file=sys.stderr)
        return 2
    packets = pcaputil.count_packets(args.capture)
    warm_cache(args.capture)
    tmp = Path(tempfile.mkdtemp(prefix="mirrorscope-bench-http."))
    try:
        best: dict[str, dict] = {}
        for i in range(args.repeat):
            out = tmp / f"out{i}"
            r = run_measured("ours", [str(ours), "analyze", str(args.capture), "--out", str(out),
                                      "--no-progress", "--no-detect"], args.core, tmp)
            r["requests"] = sum(1 for line in (out / "http.jsonl").open()
                                if json.loads(line)["method"] is not None)
            if "ours" not in best or r["wall_s"] < best["ours"]["wall_s"]:
                best["ours"] = r
            t = run_measured("tshark", [tshark, "-n", "-r", str(args.capture), "-Y", "http.request",
                                        "-T", "fields", "-e", "http.request.method", "-e", "http.host",
                                        "-e", "http.request.uri"], args.core, tmp)
            t["requests"] = sum(1 for _ in (tmp / "tshark.stdout").open())
            if "tshark" not in best or t["wall_s"] < best["tshark"]["wall_s"]:
                best["tshark"] = t
        o, t = best["ours"], best["tshark"]
        if o["requests"] != t["requests"]:
            log(f"WARNING: request counts differ: ours {o['requests']}, tshark {t['requests']}")
        rate = {k: packets / v["wall_s"] for k, v in best.items()}
        print(f"capture: {args.capture} ({packets:,} packets)")
        print(f"{'':8} {'wall s':>8} {'cpu s':>8} {'packets/s':>12} {'requests':>9} {'peak RSS':>9}")
        for k, v in best.items():
            print(f"{k:8} {v['wall_s']:8.2f} {v['cpu_s']:8.2f} {rate[k]:12,.0f} {v['requests']:9,} "
                  f"{v['peak_rss_kb'] / 1024:7.0f}MB")
        ratio = rate["ours"] / rate["tshark"]
        cpu_ratio = t["cpu_s"] / o["cpu_s"]
        print(f"ratio ours/tshark: {ratio:.1f}x by wall time, {cpu_ratio:.1f}x by CPU time (target: 10x)")
        print(json.dumps({"packets": packets, "ours": o | {"pps": rate["ours"]},
                          "tshark": t | {"pps": rate["tshark"]}, "ratio": round(ratio, 2),
                          "cpu_ratio": round(cpu_ratio, 2)}, default=str))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
