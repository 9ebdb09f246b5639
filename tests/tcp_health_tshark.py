"""Our TCP health counts per flow against tshark's tcp.analysis.* on the same capture.

Used by tests/test_tcp_health_tshark.py (corpus and crafted captures) and runnable on any
capture, e.g. the benchmark's:

    .venv/bin/python -m tests.tcp_health_tshark bench/.data/mirror-http-100k.pcap

Per flow and direction, our counts must equal tshark's, or differ only where tshark's own
output shows one of the definition differences listed in docs/results.md:

- out of order (ours) = tshark's tcp.analysis.lost_segment ("previous segment not
  captured"): both mark the segment that starts past a hole. Equal, no exception.
- retransmissions (ours) = data segments (tcp.len > 0) tshark marks retransmission, fast
  retransmission, spurious retransmission or out-of-order (tshark's "out of order" is a time
  heuristic: a segment below the highest seen that comes within the RTT, or 3 ms, of it; when
  no hole is open its bytes were all seen before, so to us it is a resend), minus those that
  land in a hole tshark reported (``filled_hole``: late bytes, not resent ones, for us).
  SYN- or FIN-only resends tshark marks carry no data: not compared. A segment tshark flags
  although none of its bytes were seen before (the peer's ACK of it came first: the mirror
  copies each direction separately and can deliver an ACK ahead of the data) is the first
  copy to us, not a resend (``first_copy``).
- zero windows: tshark's tcp.analysis.zero_window, equal.
- handshake RTT: ours (SYN to SYN-ACK plus SYN-ACK to ACK) = tshark's tcp.analysis.initial_rtt
  (first SYN ... first ACK after the SYN-ACK), to the microsecond, when the segment tshark
  timed is the originator's ACK of the SYN-ACK; tshark also times whatever ACK-flagged segment
  comes first when that ACK was not captured (a RST, the server's FIN) or its time is before
  the SYN-ACK's (a capture clock stepping back): ``not_handshake_ack`` (ours null). A SYN
  resent before the SYN-ACK: tshark times from the first, we from the last (the one answered):
  tshark's iRTT less the time between them must equal ours.
Frames tshark reads through tunnels our decoder does not open (L2TP) are left out.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

M = 0xFFFFFFFF
FIELDS = ["frame.protocols", "frame.time_epoch", "tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst",
          "ipv6.dst", "tcp.dstport", "tcp.len", "tcp.flags.syn", "tcp.flags.ack",
          "tcp.flags.fin", "tcp.flags.reset", "tcp.seq_raw",
          "tcp.analysis.retransmission", "tcp.analysis.fast_retransmission",
          "tcp.analysis.spurious_retransmission", "tcp.analysis.out_of_order",
          "tcp.analysis.lost_segment", "tcp.analysis.zero_window", "tcp.analysis.initial_rtt"]
KINDS = ("retx", "ooo", "zw")


def _after(a: int, b: int) -> bool:
    d = (a - b) & M
    return 0 < d < 0x80000000


@dataclass
class Side:
    """tshark's view of one direction of one 5-tuple."""
    retx: int = 0
    ooo: int = 0
    zw: int = 0
    filled_hole: int = 0
    late_dup: int = 0  # of retx: tshark's "out of order" while no hole was open
    first_copy: int = 0  # tshark-flagged segments at or past the top: seen for the first time
    top: int | None = None
    holes: list = field(default_factory=list)  # [lo, hi) ranges tshark reported not captured


@dataclass
class Conn:
    sides: dict = field(default_factory=lambda: {"orig": Side(), "resp": Side()})
    irtts: list = field(default_factory=list)  # tshark iRTTs timed on the handshake's ACK
    not_handshake_ack: int = 0
    syn_seq: dict = field(default_factory=dict)  # stream -> the originator's SYN seq
    syn_times: dict = field(default_factory=dict)  # stream -> [first, last] SYN before SYN-ACK
    answered: set = field(default_factory=set)  # streams whose SYN-ACK was seen
    syn_resent: int = 0
    timed: set = field(default_factory=set)  # streams whose iRTT frame was seen


def tshark_view(path: Path, ours_keys: set) -> tuple[dict, int]:
    """5-tuple (as ours: originator first) -> Conn; and the frames left out (tunnels)."""
    cmd = ["tshark", "-n", "-r", str(path), "-Y", "tcp", "-T", "fields", "-E", "occurrence=l"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    conns: dict = defaultdict(Conn)
    skipped = 0
    for line in out.splitlines():
        v = dict(zip(FIELDS, line.split("\t")))
        if "l2tp" in v["frame.protocols"]:
            skipped += 1
            continue
        s, d = v["ipv6.src"] or v["ip.src"], v["ipv6.dst"] or v["ip.dst"]
        sp, dp = int(v["tcp.srcport"]), int(v["tcp.dstport"])
        if (s, sp, d, dp) in ours_keys:
            key, side = (s, sp, d, dp), "orig"
        elif (d, dp, s, sp) in ours_keys:
            key, side = (d, dp, s, sp), "resp"
        else:
            raise AssertionError(f"{path.name}: tshark has TCP {s}:{sp} > {d}:{dp}, we have no flow")
        c = conns[key]
        x = c.sides[side]
        seq, plen = int(v["tcp.seq_raw"]), int(v["tcp.len"] or 0)
        syn, fin, rst = v["tcp.flags.syn"] == "1", v["tcp.flags.fin"] == "1", v["tcp.flags.reset"] == "1"
        end = (seq + plen + syn + fin) & M
        stream = v["tcp.stream"]
        t = float(v["frame.time_epoch"])
        if syn and v["tcp.flags.ack"] != "1" and side == "orig":
            c.syn_seq[stream] = seq
            if stream not in c.answered:
                c.syn_times.setdefault(stream, [t, t])[1] = t
        if syn and v["tcp.flags.ack"] == "1" and side == "resp":
            c.answered.add(stream)
        if v["tcp.analysis.zero_window"]:
            x.zw += 1
        if v["tcp.analysis.lost_segment"] and not rst:
            x.ooo += 1
            if x.top is not None and _after(seq, x.top):
                x.holes.append([x.top, seq])
        resent = (v["tcp.analysis.retransmission"] or v["tcp.analysis.fast_retransmission"]
                  or v["tcp.analysis.spurious_retransmission"] or v["tcp.analysis.out_of_order"])
        if resent and plen > 0 and (x.top is None or not _after(x.top, seq)):
            # Nothing of it seen before: tshark flags it because the peer's ACK of it came
            # first (the mirror copies the two directions separately and may deliver an ACK
            # ahead of the data it acknowledges): a spurious retransmission to tshark, the
            # first copy to us.
            x.first_copy += 1
        elif resent and plen > 0:
            fills = False
            for h in x.holes:  # bytes in a reported hole: late, not resent (when not all seen)
                lo, hi = h
                if _after(hi, seq) and _after(end, lo):
                    fills = True
                    if not _after(seq, lo):
                        h[0] = end if _after(hi, end) else hi  # filled from the start
                    elif not _after(hi, end):
                        h[1] = seq  # filled up to the end
            x.holes = [h for h in x.holes if _after(h[1], h[0])]
            if fills:
                x.filled_hole += 1
            else:
                x.retx += 1
                if not (v["tcp.analysis.retransmission"] or v["tcp.analysis.fast_retransmission"]
                        or v["tcp.analysis.spurious_retransmission"]):
                    x.late_dup += 1
        if not rst and (x.top is None or _after(end, x.top)):
            x.top = end
        if v["tcp.analysis.initial_rtt"] and stream not in c.timed:
            # The first frame tshark shows the iRTT on is the one it timed.
            c.timed.add(stream)
            isn = c.syn_seq.get(stream)
            if side == "orig" and not syn and not rst and isn is not None and seq == (isn + 1) & M:
                irtt = float(v["tcp.analysis.initial_rtt"])
                first, last = c.syn_times.get(stream, (t, t))
                if last > first:
                    # tshark times from the stream's first SYN, we from the last one resent
                    # before the SYN-ACK (the one that was answered).
                    irtt -= last - first
                    c.syn_resent += 1
                c.irtts.append(irtt)
            else:
                c.not_handshake_ack += 1
    return conns, skipped


def compare(path: Path, flows) -> tuple[Counter, list[str]]:
    """Counter of comparisons ("<kind> equal", "<kind> explained: <why>", "<kind> DIFFERENT")
    and a line per difference."""
    ours: dict = defaultdict(lambda: {"orig": Counter(), "resp": Counter(), "rtt": []})
    for f in flows:
        if f.protocol != 6:
            continue
        o = ours[(f.srcaddr, f.srcport, f.dstaddr, f.dstport)]
        o["orig"].update(retx=f.orig_retrans_pkts, ooo=f.orig_ooo_pkts, zw=f.orig_zero_windows)
        o["resp"].update(retx=f.resp_retrans_pkts, ooo=f.resp_ooo_pkts, zw=f.resp_zero_windows)
        if f.handshake_rtt_resp is not None and f.handshake_rtt_orig is not None:
            o["rtt"].append(f.handshake_rtt_resp + f.handshake_rtt_orig)
    conns, skipped = tshark_view(path, set(ours))
    out = Counter()
    details: list[str] = []
    if skipped:
        out["frames skipped: L2TP"] += skipped
    for key, o in ours.items():
        c = conns.get(key, Conn())
        for side in ("orig", "resp"):
            t = c.sides[side]
            for kind in KINDS:
                mine, theirs = o[side][kind], getattr(t, kind)
                if mine == theirs:
                    out[f"{kind} equal"] += 1
                    out[f"{kind} events"] += theirs
                    if kind == "retx":
                        out["retx explained: filled a hole tshark reported"] += t.filled_hole
                        out["retx explained: tshark out-of-order, no hole open"] += t.late_dup
                        out["retx explained: first copy, acknowledged before the mirror delivered it"] += t.first_copy
                else:
                    out[f"{kind} DIFFERENT"] += 1
                    details.append(f"{path.name} {key} {side} {kind}: ours {mine} tshark {theirs}")
        rtts = sorted(o["rtt"])
        want = sorted(c.irtts)
        if len(rtts) == len(want) and all(abs(a - b) <= 1.5e-6 for a, b in zip(rtts, want)):
            out["rtt equal"] += 1
            out["rtt explained: tshark timed no handshake ACK"] += c.not_handshake_ack
            out["rtt explained: SYN resent, tshark times the first"] += c.syn_resent
        else:
            out["rtt DIFFERENT"] += 1
            details.append(f"{path.name} {key} rtt: ours {rtts} tshark {want}")
    return out, details


def main(argv: list[str]) -> int:
    import tempfile

    from tests.conftest import NO_TIMEOUTS, run

    total = Counter()
    for p in argv:
        with tempfile.TemporaryDirectory() as tmp:
            _, flows = run([Path(p)], Path(tmp), NO_TIMEOUTS)
        counts, details = compare(Path(p), flows)
        total.update(counts)
        for line in details:
            print(line)
    for k in sorted(total):
        print(f"{k}: {total[k]}")
    return 1 if any("DIFFERENT" in k for k in total) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
