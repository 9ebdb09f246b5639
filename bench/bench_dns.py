#!/usr/bin/env python3
"""The cost of DNS analysis, on a lab-made capture with DNS load (bench/make_dns_capture.sh).

usage: python bench/bench_dns.py [--capture FILE] [--repeat N]

1. analyze (the embedded pipeline in process: decode, flows, L7, records) with the default L7
   protocols against the same without "dns" (baseline), detectors off; then both with the
   detectors on (the DNS detectors included in the first). Ratio = with / without.
2. --parsers: the per-message cost of our parser (stream_app/core/dns.parse) against
   dpkt.dns.DNS and dnspython's dns.message.from_wire (when installed) over every DNS
   message of the capture: why the parser is our own (stream_app/core/dns.py's docstring).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream_app.adapters.embedded import analyze  # noqa: E402
from stream_app.core.detectors import DetectConfig  # noqa: E402
from stream_app.core.l7 import L7Config  # noqa: E402

DEFAULT = ROOT / "bench" / ".data" / "mirror-dns.pcap"


def timed(capture: Path, l7: L7Config, detect, repeat: int) -> tuple[float, object]:
    best, res = float("inf"), None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            res = analyze([capture], Path(d), l7=l7, detect=detect)
            best = min(best, time.perf_counter() - t)
    return best, res


def parsers(capture: Path) -> None:
    from collectors.capture import open_capture
    from collectors.decode import Decoder, PayloadPolicy
    from collectors.source import capture_batches
    from stream_app.core import dns
    msgs = []
    for b in capture_batches(open_capture(capture), Decoder(payload=PayloadPolicy(max_bytes=65535, ports=None))):
        for r in b:
            if r.proto == 17 and 53 in (r.sport, r.dport) and r.payload:
                msgs.append(bytes(r.payload))
    print(f"{len(msgs)} DNS messages (UDP)")
    cands = [("ours (stream_app.core.dns.parse)", dns.parse)]
    import dpkt
    cands.append(("dpkt.dns.DNS", dpkt.dns.DNS))
    try:
        import dns.message as dm
        cands.append(("dnspython dns.message.from_wire", dm.from_wire))
    except ImportError:
        print("dnspython not installed: not compared")
    base = None
    for name, fn in cands:
        t = time.perf_counter()
        for m in msgs:
            try:
                fn(m)
            except Exception:  # noqa: BLE001 - the libraries raise on odd messages
                pass
        us = (time.perf_counter() - t) / len(msgs) * 1e6
        base = base or us
        print(f"  {name:36s} {us:7.2f} us/message  ({us / base:.2f}x ours)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--parsers", action="store_true")
    args = ap.parse_args()
    if not args.capture.is_file():
        print(f"bench_dns: {args.capture} missing: make it with bench/make_dns_capture.sh (root)",
              file=sys.stderr)
        return 2
    if args.parsers:
        parsers(args.capture)
        return 0
    on = L7Config()
    off = replace(on, protocols=on.protocols - {"dns"})
    for label, detect in (("detectors off", None), ("detectors on", DetectConfig())):
        # Interleaved, the fastest of each kept: the machine is shared, its load drifts.
        t_off = t_on = float("inf")
        for _ in range(args.repeat):
            t_off = min(t_off, timed(args.capture, off, detect, 1)[0])
            t, res = timed(args.capture, on, detect, 1)
            t_on = min(t_on, t)
        print(f"{label}: {res.frames} packets; l7 without dns {t_off:.3f} s, with dns "
              f"{t_on:.3f} s: ratio {t_on / t_off:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
