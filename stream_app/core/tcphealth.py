"""TCP health of a flow from the mirror's copy of its segments: handshake round trips,
retransmissions, out-of-order segments, zero windows and bytes the capture missed.

No reassembly: a few ints per direction on the Flow (flowtable.py), so every TCP flow gets
these, not only the ones an analyzer reassembles. The flow table handles the common case
inline (a segment with ACK that starts exactly where its direction's data ended, no SYN or
RST, non-zero window: it only moves ``nxt`` and the last ACK); every other segment comes to
``segment`` here.

Definitions (docs/results.md has them for users, with how they map to tshark's and Zeek's):
- ``nxt``: the sequence number just past the highest byte a direction was seen to send
  (SYN and FIN count one, as in TCP). All comparisons are modulo 2**32 (RFC 793's sequence
  arithmetic: ``a`` is after ``b`` when (a - b) mod 2**32 is in (0, 2**31)), so a
  connection's sequence numbers wrapping past zero change nothing.
- out of order (``ooo``): a segment (not RST) that starts after ``nxt``: the bytes between
  were sent (the segment's number says so) but not seen yet: a hole. tshark marks this
  segment "previous segment not captured" (tcp.analysis.lost_segment).
- a later segment that fills (part of) an open hole is neither a retransmission nor out of
  order: those bytes were simply late, and stop counting as missed.
- retransmission: a data segment (payload > 0) that starts before ``nxt``, except a
  keep-alive (at most one byte, at ``nxt`` - 1, as tshark's tcp.analysis.keep_alive). Its
  bytes below ``nxt`` that fill no hole are the retransmitted bytes; a segment that also
  carries new bytes past ``nxt`` (repacketised) counts once, with its old bytes only.
  SYN-only and FIN-only resends carry no data and are not counted.
- zero window: a segment advertising window 0 that is not SYN, FIN or RST (as tshark's
  tcp.analysis.zero_window): every such segment counts, so a long stall shows as many.
- missed bytes (Zeek's missed_bytes: "bytes missed in content gaps"): the bytes of holes still
  open when the record is made, plus, per direction, the bytes the peer's last acknowledgment
  covers past ``nxt`` (acknowledged, so sent, but never seen: Zeek's "ack above a hole"),
  which the record then takes as skipped. A hole filled before the record is made is not
  missed. Zeek reports a gap when its reassembler gives up on it; we have no reassembler, so
  "still open at the record's end" stands in for it.
- one hole per direction is tracked exactly; a second opening while the first is unfilled
  widens it to cover both, and a segment landing inside the widened range is taken as filling
  (it may in fact resend bytes between the two holes: then it is not counted a
  retransmission). Exact with one loss at a time, which is what a mirror usually drops.
- handshake RTTs: ``rtt_resp`` from the last SYN to the first SYN-ACK after it (a SYN resent
  because the first, or its answer, was lost: the answer that counts is to the resend),
  ``rtt_orig`` from the last SYN-ACK to the originator's ACK of it (the segment whose sequence
  number is the one the SYN-ACK acknowledged; a later segment when the capture missed that
  ACK is not timed: null). Only the record holding the handshake carries them.
"""

from __future__ import annotations

SEQ_MASK = 0xFFFFFFFF
_HALF = 0x80000000
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
NS = 1_000_000_000


def _signed(d: int) -> int:
    """A 32-bit sequence difference as a signed distance."""
    return d - 0x100000000 if d >= _HALF else d


def segment(f, r, is_orig: bool, ts: int) -> None:
    """Account one segment that is not simply the next in order (see the module docstring)."""
    fl = r.tcp_flags
    if fl & ACK:
        if is_orig:
            f.o_ack = r.ack
        else:
            f.r_ack = r.ack
    if r.window == 0 and not fl & (SYN | FIN | RST):
        if is_orig:
            f.orig_zw += 1
        else:
            f.resp_zw += 1
    if fl & SYN:
        if is_orig:
            if not fl & ACK and f.rtt_orig_ns is None and f.syn_ns >= 0:
                # The handshake is the last SYN and the SYN-ACK that answers it: a SYN resent
                # (the first, or its SYN-ACK, lost) restarts the timing.
                f.syn_ns = ts
                f.rtt_resp_ns = None
        elif fl & ACK and f.rtt_orig_ns is None and f.syn_ns >= 0:
            if f.syn_ns and f.rtt_resp_ns is None:
                f.rtt_resp_ns = ts - f.syn_ns
            f.synack_ns = ts  # the last SYN-ACK before the originator's ACK
            f.hs_seq = r.ack
    if fl & RST:
        return  # a reset's sequence number need not be in the window: it says nothing here
    plen = r.payload_len
    seq = r.seq
    end = (seq + plen + (1 if fl & SYN else 0) + (1 if fl & FIN else 0)) & SEQ_MASK
    if is_orig:
        nxt, glo, ghi, gap = f.o_nxt, f.o_glo, f.o_ghi, f.o_gap
    else:
        nxt, glo, ghi, gap = f.r_nxt, f.r_glo, f.r_ghi, f.r_gap
    if nxt is None:
        nxt = end  # the direction's first segment: nothing before it to compare with
    else:
        d = (seq - nxt) & SEQ_MASK
        if d == 0:
            nxt = end
        elif d < _HALF:
            # Starts past everything seen: the d bytes before it are a hole.
            if is_orig:
                f.orig_ooo += 1
            else:
                f.resp_ooo += 1
            f.missed += d
            if gap:
                ghi, gap = seq, gap + d  # a second hole: widen the tracked range over both
            else:
                glo, ghi, gap = nxt, seq, d
            nxt = end
        elif plen:
            # Starts before nxt: late, resent or both.
            past = _signed((end - nxt) & SEQ_MASK)
            old_end = nxt if past > 0 else end
            old = min(plen, (old_end - seq) & SEQ_MASK)
            filled = 0
            if gap:
                width = (ghi - glo) & SEQ_MASK
                s = _signed((seq - glo) & SEQ_MASK)
                e = _signed((old_end - glo) & SEQ_MASK)
                overlap = min(e, width) - max(s, 0)
                if overlap > 0:
                    filled = min(overlap, gap)
                    gap -= filled
                    f.missed -= filled
                    if gap == 0:
                        glo = ghi = 0
                    elif s <= 0:
                        glo = old_end  # filled from the hole's start
                    elif e >= width:
                        ghi = seq  # filled up to the hole's end
            resent = old - filled
            if resent > 0 and not (plen <= 1 and d == SEQ_MASK):  # not a keep-alive
                if is_orig:
                    f.orig_retx_pkts += 1
                    f.orig_retx_bytes += resent
                else:
                    f.resp_retx_pkts += 1
                    f.resp_retx_bytes += resent
            if past > 0:
                nxt = end
        elif (end - nxt) & SEQ_MASK and (end - nxt) & SEQ_MASK < _HALF:
            nxt = end  # a SYN or FIN just past nxt with no data (seq = nxt - 1 would be odd)
    if is_orig:
        f.o_nxt, f.o_glo, f.o_ghi, f.o_gap = nxt, glo, ghi, gap
    else:
        f.r_nxt, f.r_glo, f.r_ghi, f.r_gap = nxt, glo, ghi, gap


def _acked_unseen(f, is_orig: bool) -> int:
    """Bytes of one direction its peer acknowledged past everything seen; the direction's
    ``nxt`` moves to that acknowledgment (taken as skipped, as Zeek's reassembler does)."""
    if is_orig:
        nxt, ack = f.o_nxt, f.r_ack
    else:
        nxt, ack = f.r_nxt, f.o_ack
    if nxt is None or ack is None:
        return 0
    d = (ack - nxt) & SEQ_MASK
    if d == 0 or d >= _HALF:
        return 0
    if is_orig:
        f.o_nxt = ack
    else:
        f.r_nxt = ack
    return d


def health_fields(f) -> dict:
    """The FlowRecord v3 TCP health fields of the record being made."""
    missed = f.missed + _acked_unseen(f, True) + _acked_unseen(f, False)
    f.missed = missed
    return {
        "handshake_rtt_resp": None if f.rtt_resp_ns is None else round(f.rtt_resp_ns / NS, 9),
        "handshake_rtt_orig": None if f.rtt_orig_ns is None else round(f.rtt_orig_ns / NS, 9),
        "orig_retrans_pkts": f.orig_retx_pkts, "orig_retrans_bytes": f.orig_retx_bytes,
        "resp_retrans_pkts": f.resp_retx_pkts, "resp_retrans_bytes": f.resp_retx_bytes,
        "orig_ooo_pkts": f.orig_ooo, "resp_ooo_pkts": f.resp_ooo,
        "orig_zero_windows": f.orig_zw, "resp_zero_windows": f.resp_zw,
        "missed_bytes": missed,
    }


def restart_health(f) -> None:
    """An active-timeout split: the counters start over. Open holes were counted as missed in
    the record just made, so they are closed (bytes filling them later count as resent), and
    the handshake RTTs stay on that record."""
    f.orig_retx_pkts = f.orig_retx_bytes = f.resp_retx_pkts = f.resp_retx_bytes = 0
    f.orig_ooo = f.resp_ooo = f.orig_zw = f.resp_zw = f.missed = 0
    f.o_gap = f.r_gap = f.o_glo = f.o_ghi = f.r_glo = f.r_ghi = 0
    if f.rtt_orig_ns is not None or f.rtt_resp_ns is not None:
        f.rtt_resp_ns = f.rtt_orig_ns = None
        f.syn_ns = f.synack_ns = -1  # the handshake is behind: none to time from here on
