#!/usr/bin/env python3
"""Naive baseline: the Python equivalent of the analyzer in AWS's Traffic Mirroring webinar.

usage: python bench/naive_dpkt.py FILE.pcap

For every packet it builds full dpkt objects for the outer layers (dpkt.ethernet.Ethernet parses
Ethernet, IP and UDP eagerly), keeps UDP to port 4789, checks the 8-byte VXLAN header (dpkt has no
VXLAN module), builds a second full dpkt.ethernet.Ethernet on the inner frame (payload[8:]), takes
the inner IP 5-tuple, and counts packets and bytes per bidirectional flow in a dict. That is the
same job as MirrorScope's flow counting, done the obvious way: one object tree per layer, per
packet, twice.

It streams the file (dpkt.pcap.Reader reads record by record) and prints one JSON line:
  {"tool": "naive_dpkt", "packets": ..., "vxlan_packets": ..., "flows": ..., "bytes": ...,
   "seconds": ..., "packets_per_s": ...}
"packets" counts every record in the file; "bytes" sums the inner IP total lengths (IPv4 total
length, IPv6 payload length + 40); "seconds" is the wall time of the whole loop, file open included.
Flows are keyed on the inner 5-tuple only (protocol, both address/port endpoints in canonical order),
so both directions of a connection count as one flow even though Linux and AWS send them with
different outer UDP source ports.
"""
from __future__ import annotations

import json
import socket
import struct
import sys
import time

try:
    import dpkt
except ImportError:  # pragma: no cover - message for people running it by hand
    sys.exit("naive_dpkt.py needs dpkt: pip install 'dpkt>=1.9.8' (or the project's [bench] extra)")

VXLAN_PORT = 4789


def open_reader(f):
    magic = f.read(4)
    f.seek(0)
    if magic == b"\x0a\x0d\x0d\x0a":
        return dpkt.pcapng.Reader(f)
    return dpkt.pcap.Reader(f)


def run(path: str) -> dict:
    flows: dict[tuple, list[int]] = {}
    packets = vxlan_packets = not_vxlan = undecodable = non_ip = 0
    total_bytes = 0
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        for _ts, buf in open_reader(f):
            packets += 1
            try:
                outer = dpkt.ethernet.Ethernet(buf)
            except (dpkt.UnpackError, struct.error):
                undecodable += 1
                continue
            ip = outer.data
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                not_vxlan += 1
                continue
            udp = ip.data
            if not isinstance(udp, dpkt.udp.UDP) or udp.dport != VXLAN_PORT:
                not_vxlan += 1
                continue
            payload = udp.data
            if len(payload) < 8 or not payload[0] & 0x08:  # VXLAN "I" flag: VNI is valid
                undecodable += 1
                continue
            # vni = int.from_bytes(payload[4:7], "big")  (kept out of the key: see the docstring)
            try:
                inner = dpkt.ethernet.Ethernet(payload[8:])
            except (dpkt.UnpackError, struct.error):
                undecodable += 1
                continue
            vxlan_packets += 1
            iip = inner.data
            if isinstance(iip, dpkt.ip.IP):
                length = iip.len
            elif isinstance(iip, dpkt.ip6.IP6):
                length = iip.plen + 40
            else:
                non_ip += 1
                continue
            l4 = iip.data
            if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                sport, dport = l4.sport, l4.dport
            else:
                sport = dport = 0
            a = (iip.src, sport)
            b = (iip.dst, dport)
            key = (iip.p, a, b) if a <= b else (iip.p, b, a)
            c = flows.get(key)
            if c is None:
                flows[key] = [1, length]
            else:
                c[0] += 1
                c[1] += length
            total_bytes += length
    seconds = time.perf_counter() - t0
    return {
        "tool": "naive_dpkt",
        "file": path,
        "packets": packets,
        "vxlan_packets": vxlan_packets,
        "flows": len(flows),
        "bytes": total_bytes,
        "not_vxlan": not_vxlan,
        "undecodable": undecodable,
        "non_ip_inner": non_ip,
        "seconds": round(seconds, 4),
        "packets_per_s": round(packets / seconds, 1) if seconds > 0 else None,
        "dpkt": dpkt.__version__,
        "python": sys.version.split()[0],
        "top_flows": _top(flows),
    }


def _fmt(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def _top(flows: dict, n: int = 3) -> list:
    """The n biggest flows by bytes, printable (a sanity check against the other tools)."""
    best = sorted(flows.items(), key=lambda kv: kv[1][1], reverse=True)[:n]
    return [
        {"proto": k[0], "a": f"{_fmt(k[1][0])}:{k[1][1]}", "b": f"{_fmt(k[2][0])}:{k[2][1]}",
         "packets": v[0], "bytes": v[1]}
        for k, v in best
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0] + "\n\nusage: python bench/naive_dpkt.py FILE.pcap", file=sys.stderr)
        return 2
    try:
        result = run(argv[0])
    except FileNotFoundError:
        print(f"naive_dpkt.py: no such file: {argv[0]}", file=sys.stderr)
        return 1
    except ValueError as e:  # dpkt raises ValueError for a bad magic
        print(f"naive_dpkt.py: {argv[0]}: not a pcap/pcapng file ({e})", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
