#!/usr/bin/env python3
"""What TCP health costs the flow table itself, in process (no start-up, no decoding, no output).

usage: python bench/bench_tcp_health.py [CAPTURE] [--repeat N]

Decodes the capture once (default bench/.data/mirror-http-500k.pcap, made by make_capture.sh),
then feeds the same packet records to a FlowTable with TCP health on and to one with it off
(FlowConfig.tcp_health=False: the baseline, the flow table as it was before), alternating,
N times each (default 5), and prints the best time of each and their ratio. bench_analyze.py
measures the same end to end (ours vs ours-nohealth), where start-up and decoding dilute it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from collectors.capture import open_capture  # noqa: E402
from collectors.decode import Decoder  # noqa: E402
from stream_app.core.flowtable import FlowConfig, FlowTable  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture", nargs="?", type=Path,
                    default=REPO / "bench" / ".data" / "mirror-http-500k.pcap")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    dec = Decoder()
    cap = open_capture(args.capture)
    try:
        pkts = [r for ts, lt, _, frame in cap.frames()
                if (r := dec.decode(frame, lt, ts)) is not None]
    finally:
        cap.close()
    print(f"{args.capture.name}: {len(pkts):,} packet records")
    best = {True: float("inf"), False: float("inf")}
    for _ in range(args.repeat):
        for health in (False, True):
            table = FlowTable(FlowConfig(tcp_health=health))
            t0 = time.process_time()
            for i in range(0, len(pkts), 1000):
                table.add_batch(pkts[i:i + 1000])
            recs = table.flush()
            best[health] = min(best[health], time.process_time() - t0)
            assert recs and not table.stats["packet_errors"]
    for health in (False, True):
        print(f"tcp_health={health!s:<5}  {best[health]:.3f} s CPU  "
              f"{len(pkts) / best[health]:,.0f} packets/s")
    print(f"flow table with TCP health / without: {best[True] / best[False]:.3f}x CPU "
          f"(best of {args.repeat}; issue 19's target for flows-only mode: <= 1.15x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
