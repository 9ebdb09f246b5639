"""Differential test against tshark: the same conversations, packets and bytes as
`tshark -z conv,tcp -z conv,udp` on every corpus capture tshark decodes.

tshark counts a conversation's bytes as whole frames; our flow records count IP bytes (as VPC
Flow Logs do). So bytes are compared two ways: tshark's frame bytes against the frame lengths
of the packets our decoder put in each flow, and our records' IP bytes against the sum of the
innermost IP length fields tshark reports per packet.

Deliberate differences (docs/decoding.md):
- Outer tunnel conversations (UDP 4789/6081) are tunnels, not flows: we decode through them.
- ICMP errors quote the packet that caused them; tshark also counts the quoted UDP/TCP header
  as a conversation of its own, we count the ICMP message only.
- Frames our decoder drops (non-IP, malformed) are in no flow.
- L2TP (UDP 1701) is not decoded as a tunnel: what it carries stays one UDP 1701 flow.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from collectors.capture import open_capture
from collectors.decode import Decoder
from collectors.flowkey import flow_key, ip_text
from tests.conftest import CORPUS, NO_TIMEOUTS, corpus_files, run

TUNNEL_PORTS = {4789, 6081}
_LINE = re.compile(
    r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+)\s+([\d,.]+ \w+)\s+(\d+)\s+([\d,.]+ \w+)\s+(\d+)\s+([\d,.]+ \w+)")
_UNITS = {"bytes": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


def _bytes(s: str) -> tuple[int, int]:
    """tshark prints small sizes exactly and larger ones cut down to whole kB/MB:
    the range [low, high] the true value lies in."""
    num, unit = s.split()
    mult = _UNITS[unit]
    low = int(float(num.replace(",", "")) * mult)
    return low, low + (0 if mult == 1 else mult - 1)


def tshark_conversations(tshark: str, path: Path) -> dict:
    out = subprocess.run([tshark, "-n", "-r", str(path), "-q", "-z", "conv,tcp", "-z", "conv,udp"],
                         capture_output=True, text=True, check=True).stdout
    convs = {}
    proto = None
    for line in out.splitlines():
        if line.startswith("TCP Conversations"):
            proto = 6
        elif line.startswith("UDP Conversations"):
            proto = 17
        m = _LINE.match(line)
        if not m or proto is None:
            continue
        a, pa, b, pb = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        if proto == 17 and (pa in TUNNEL_PORTS or pb in TUNNEL_PORTS):
            continue
        # "<-" is b to a, "->" is a to b
        convs[(proto, frozenset({(a.strip("[]"), pa), (b.strip("[]"), pb)}))] = {
            (b.strip("[]"), pb): int(m.group(5)), (a.strip("[]"), pa): int(m.group(7)),
            "frames": int(m.group(9)), "bytes": _bytes(m.group(10))}
    return convs


def tshark_ip_lengths(tshark: str, path: Path) -> dict:
    """Sum of the innermost IP packet length per (proto, endpoints), from tshark's fields."""
    out = subprocess.run(
        [tshark, "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=l",
         "-e", "ip.len", "-e", "ipv6.plen", "-e", "ip.src", "-e", "ip.dst",
         "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "tcp.srcport", "-e", "tcp.dstport",
         "-e", "udp.srcport", "-e", "udp.dstport", "-e", "ip.proto", "-e", "ipv6.nxt",
         "-Y", "(tcp or udp) and not icmp and not icmpv6"],
        capture_output=True, text=True, check=True).stdout
    sums: dict = defaultdict(int)
    for line in out.splitlines():
        f = line.split("\t")
        iplen, plen, s4, d4, s6, d6, ts, td, us, ud = f[:10]
        if ts:
            proto, sp, dp = 6, int(ts), int(td)
        else:
            proto, sp, dp = 17, int(us), int(ud)
        if sp in TUNNEL_PORTS or dp in TUNNEL_PORTS:
            continue
        # The innermost IP header is the one tshark listed last; which version it is follows
        # from which address field is set (when both are, the file mixes them: skip it).
        if s4 and not s6:
            src, dst, n = s4, d4, int(iplen)
        elif s6 and not s4:
            src, dst, n = s6, d6, int(plen) + 40
        else:
            continue
        sums[(proto, frozenset({(src, sp), (dst, dp)}))] += n
    return sums


def our_frame_bytes(path: Path) -> dict:
    """Frame bytes (as tshark counts them) of the packets our decoder put in each flow."""
    reader = open_capture(path)
    dec = Decoder()
    sums: dict = defaultdict(int)
    for ts, lt, orig_len, frame in reader.frames():
        r = dec.decode(frame, lt, ts)
        if r is None or r.proto not in (6, 17):
            continue
        key, _ = flow_key(r)
        sums[(r.proto, frozenset({(ip_text(r.src), r.sport), (ip_text(r.dst), r.dport)}))] += orig_len
    reader.close()
    return sums


# Per file: conversations tshark finds that we deliberately do not, as a predicate over its key.
DELIBERATE = {
    # IPv6 sessions carried in L2TP (UDP 1701) inside PPPoE; the L2TP flow itself matches.
    "dpkt__nb6-http.pcap": lambda key: all(":" in addr for addr, _ in key[1]),
}


def _diff_files():
    skip = {"community-id/sctp.pcap", "community-id/icmp.pcap", "community-id/icmp6.pcap"}
    return [p for p in corpus_files() if str(p.relative_to(CORPUS)) not in skip]


@pytest.mark.parametrize("path", _diff_files(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_conversations_match_tshark(path, tmp_path, tshark):
    convs = tshark_conversations(tshark, path)
    skip = DELIBERATE.get(path.name)
    if skip:
        convs = {k: v for k, v in convs.items() if not skip(k)}
    _, flows = run([path], tmp_path, NO_TIMEOUTS)
    ours: dict = {}
    for f in flows:
        if f.protocol not in (6, 17):
            continue
        k = (f.protocol, frozenset({(f.srcaddr, f.srcport), (f.dstaddr, f.dstport)}))
        agg = ours.setdefault(k, {(f.srcaddr, f.srcport): 0, (f.dstaddr, f.dstport): 0,
                                  "packets": 0, "bytes": 0})
        agg[(f.srcaddr, f.srcport)] += f.orig_pkts
        agg[(f.dstaddr, f.dstport)] += f.resp_pkts
        agg["packets"] += f.packets
        agg["bytes"] += f.bytes
    assert set(ours) == set(convs), (
        f"only ours: {sorted(map(str, set(ours) - set(convs)))[:5]} "
        f"only tshark: {sorted(map(str, set(convs) - set(ours)))[:5]}")
    frame_bytes = our_frame_bytes(path)
    ip_lengths = tshark_ip_lengths(tshark, path)
    for k, t in convs.items():
        o = ours[k]
        assert o["packets"] == t["frames"], k
        for ep in k[1]:  # packets sent by each endpoint
            assert o[ep] == t[ep], (k, ep)
        low, high = t["bytes"]
        assert low <= frame_bytes[k] <= high, (k, frame_bytes[k], t["bytes"])
        if k in ip_lengths and not skip:  # tshark's per-packet fields mix the tunnel's layers
            assert o["bytes"] == ip_lengths[k], (k, o["bytes"], ip_lengths[k])
