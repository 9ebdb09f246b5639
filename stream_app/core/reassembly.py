"""TCP reassembly for one direction of a connection, feeding a byte-stream consumer.

Policy (Zeek and Suricata make the same default choices):
- In-order segments go straight through; nothing is copied or buffered on that path.
- Retransmissions are dropped; where a segment overlaps bytes already delivered, the first copy
  wins and only its new tail goes through.
- Out-of-order segments wait in a buffer until the hole before them fills. The buffer is capped
  per direction: when it would overflow, the hole is declared a gap, and delivery resumes at
  the earliest buffered segment.
- Bytes a capture did not keep (AWS truncation, snap length) are delivered as a gap of their
  length, so the consumer keeps its byte count and can decide whether it is still in sync.
- A direction picked up midstream (no SYN seen) starts at its first data segment.

The consumer has three methods: ``data(bytes, ts_ns)``, ``gap(nbytes, ts_ns)`` and ``end(ts_ns)``.
"""

from __future__ import annotations

from dataclasses import dataclass

MASK = 0xFFFFFFFF
HALF = 1 << 31
DEFAULT_BUFFER_CAP = 1 << 20


@dataclass(slots=True)
class ReassemblyStats:
    segments: int = 0
    retransmitted: int = 0
    overlaps: int = 0
    out_of_order: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    cap_hits: int = 0


class Direction:
    """One direction's byte stream."""

    __slots__ = ("consumer", "next_seq", "pending", "pending_bytes", "cap", "stats", "midstream")

    def __init__(self, consumer, cap: int = DEFAULT_BUFFER_CAP, stats: ReassemblyStats | None = None):
        self.consumer = consumer
        self.next_seq: int | None = None
        self.pending: dict[int, tuple[bytes, int, int]] = {}  # seq -> (payload, wire len, ts)
        self.pending_bytes = 0
        self.cap = cap
        self.stats = stats if stats is not None else ReassemblyStats()
        self.midstream = False

    def syn(self, seq: int) -> None:
        """The SYN's sequence number: data starts one after it."""
        if self.next_seq is None:
            self.next_seq = (seq + 1) & MASK

    def segment(self, seq: int, payload: bytes, wire_len: int, ts: int) -> None:
        """A data segment: ``wire_len`` bytes on the wire, of which ``payload`` was captured."""
        st = self.stats
        st.segments += 1
        nxt = self.next_seq
        if nxt is None:
            self.next_seq = nxt = seq
            self.midstream = True
        if seq == nxt:
            self._deliver(payload, wire_len, ts)
            if self.pending:
                self._drain()
            return
        dist = ((seq - nxt + HALF) & MASK) - HALF
        if dist < 0:
            if dist + wire_len <= 0:
                st.retransmitted += 1
                return
            # Overlaps what was delivered: the first copy wins, deliver the new tail.
            st.overlaps += 1
            cut = -dist
            self._deliver(payload[cut:], wire_len - cut, ts)
            if self.pending:
                self._drain()
            return
        # A hole before this segment: hold it until the hole fills or the buffer is full.
        st.out_of_order += 1
        if seq in self.pending:
            if wire_len <= self.pending[seq][1]:
                st.retransmitted += 1
                return
            self.pending_bytes -= len(self.pending[seq][0])
        self.pending[seq] = (payload, wire_len, ts)
        self.pending_bytes += len(payload)
        if self.pending_bytes > self.cap:
            st.cap_hits += 1
            self._skip_hole(ts)

    def acked(self, ack: int, ts: int) -> None:
        """The peer acknowledged everything before ``ack``: a hole below it was received but
        not captured, and will never be retransmitted. Declare it a gap now instead of
        waiting for the buffer to fill."""
        nxt = self.next_seq
        if not self.pending or nxt is None:
            return
        if ((ack - nxt + HALF) & MASK) - HALF > 0:
            self._skip_hole(ts, ack)

    def _deliver(self, payload: bytes, wire_len: int, ts: int) -> None:
        self.next_seq = (self.next_seq + wire_len) & MASK
        if payload:
            self.consumer.data(payload, ts)
        if len(payload) < wire_len:
            self.stats.gaps += 1
            self.stats.gap_bytes += wire_len - len(payload)
            self.consumer.gap(wire_len - len(payload), ts)

    def _drain(self) -> None:
        """Deliver buffered segments that have become contiguous."""
        pending = self.pending
        while pending:
            nxt = self.next_seq
            seg = pending.pop(nxt, None)
            if seg is not None:
                self.pending_bytes -= len(seg[0])
                self._deliver(*seg)
                continue
            # A buffered segment may start inside what was just delivered.
            for seq in list(pending):
                dist = ((seq - nxt + HALF) & MASK) - HALF
                if dist < 0:
                    payload, wire_len, ts = pending.pop(seq)
                    self.pending_bytes -= len(payload)
                    if dist + wire_len > 0:
                        self.stats.overlaps += 1
                        self._deliver(payload[-dist:], wire_len + dist, ts)
                    else:
                        self.stats.retransmitted += 1
                    break
            else:
                return

    def _skip_hole(self, ts: int, upto: int | None = None) -> None:
        """Declare the hole before the earliest buffered segment (or before ``upto``, if that
        comes first) lost, and go on from there."""
        nxt = self.next_seq
        first = min(self.pending, key=lambda s: ((s - nxt + HALF) & MASK) - HALF)
        if upto is not None and ((upto - first + HALF) & MASK) - HALF < 0:
            first = upto
        hole = ((first - nxt + HALF) & MASK) - HALF
        if hole <= 0:
            self._drain()
            return
        self.stats.gaps += 1
        self.stats.gap_bytes += hole
        self.consumer.gap(hole, ts)
        self.next_seq = first
        self._drain()

    def end(self, ts: int) -> None:
        """The connection is over: whatever is still buffered is delivered after its gaps."""
        while self.pending:
            self._skip_hole(ts)
        self.consumer.end(ts)
