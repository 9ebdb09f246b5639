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
- A segment further from the expected sequence number than any TCP window can reach (1 GiB,
  RFC 7323's largest window) is a jump, not a retransmission or a segment to wait for: what
  is buffered goes out, the distance is delivered as a gap, and the stream goes on from the
  segment. (Compared modulo 2**32 alone, a jump of 2 GiB or more looked like an old
  retransmission and everything after it was dropped.)

Out-of-order segments are kept in a dict by sequence number (exact lookups) and, while any
wait, in a binary heap of their offsets from an anchor (heapq): segments only ever leave the
buffer earliest first, so the earliest is all the order needed, found and removed in
O(log n). A reversed or shuffled stream thus costs O(log n) per segment, where a scan of every
held segment made it quadratic (100k shuffled segments of one connection took 46 s).

The consumer has three methods: ``data(bytes, ts_ns)``, ``gap(nbytes, ts_ns)`` and ``end(ts_ns)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from typing import Annotated

import msgspec

MASK = 0xFFFFFFFF
HALF = 1 << 31
MAX_WINDOW = 1 << 30
"""RFC 7323 2.3: a window scale of at most 14, so no segment is valid further away."""
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
    jumps: int = 0


def _dist(a: int, b: int) -> int:
    """Signed distance from sequence number b to a, modulo 2**32."""
    return ((a - b + HALF) & MASK) - HALF


_Seq = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]


class DirectionState(msgspec.Struct, array_like=True, gc=False):
    """A Direction as stored (stream_app/state/codec.py): the consumer and the statistics are
    the owner's, bound again on restore; the heap index is rebuilt from ``pending``."""

    next_seq: _Seq | None
    pending: list[tuple[_Seq, bytes, Annotated[int, msgspec.Meta(ge=0)], int]]
    """(seq, payload, wire len, ts) of the out-of-order segments, in arrival order."""
    cap: Annotated[int, msgspec.Meta(ge=0)]
    midstream: bool


class Direction:
    """One direction's byte stream."""

    __slots__ = ("consumer", "next_seq", "pending", "pending_bytes", "cap", "stats", "midstream",
                 "order", "anchor")

    def __init__(self, consumer, cap: int = DEFAULT_BUFFER_CAP, stats: ReassemblyStats | None = None):
        self.consumer = consumer
        self.next_seq: int | None = None
        self.pending: dict[int, tuple[bytes, int, int]] = {}  # seq -> (payload, wire len, ts)
        self.pending_bytes = 0
        self.cap = cap
        self.stats = stats if stats is not None else ReassemblyStats()
        self.midstream = False
        self.order: list[int] | None = None
        """Heap of the offsets (seq - anchor, signed) of the pending segments; None while
        none waits."""
        self.anchor = 0

    def __setstate__(self, state) -> None:
        # Version-1 (pickled) state only, read by the codec's restricted unpickler; one
        # pickled before the sorted index existed rebuilds it from the pending dict.
        self.order = None
        self.anchor = 0
        for k, v in state[1].items():
            setattr(self, k, v)
        if self.pending and self.order is None:
            self._reindex()

    def to_state(self) -> DirectionState:
        p = self.pending
        return DirectionState(self.next_seq,
                              [(s, *seg) for s, seg in p.items()] if p else [],
                              self.cap, self.midstream)

    @classmethod
    def from_state(cls, st: DirectionState, consumer, stats: ReassemblyStats) -> Direction:
        d = cls(consumer, st.cap, stats)
        d.next_seq = st.next_seq
        d.midstream = st.midstream
        if st.pending:
            pending = d.pending
            for seq, payload, wire_len, ts in st.pending:
                pending[seq & MASK] = (payload, wire_len, ts)
            d.pending_bytes = sum(len(v[0]) for v in pending.values())
            d._reindex()
        return d

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
        if dist >= MAX_WINDOW or dist <= -MAX_WINDOW:
            self._jump(seq, ts)
            self._deliver(payload, wire_len, ts)
            return
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
        pending = self.pending
        old = pending.get(seq)
        if old is not None:
            if wire_len <= old[1]:
                st.retransmitted += 1
                return
            self.pending_bytes -= len(old[0])
        else:
            if not pending:
                self.anchor = nxt
                self.order = []
            elif ((nxt - self.anchor) & MASK) >= MAX_WINDOW:
                self._reindex()  # keep every offset far from the wrap
            heappush(self.order, ((seq - self.anchor + HALF) & MASK) - HALF)
        pending[seq] = (payload, wire_len, ts)
        self.pending_bytes += len(payload)
        if self.pending_bytes > self.cap:
            st.cap_hits += 1
            # Until it fits: one skip drains only up to the next hole, and scattered
            # segments would let the buffer creep past its cap.
            while self.pending_bytes > self.cap and self.pending:
                self._skip_hole(ts)

    def acked(self, ack: int, ts: int) -> None:
        """The peer acknowledged everything before ``ack``: a hole below it was received but
        not captured, and will never be retransmitted. Declare it a gap now instead of
        waiting for the buffer to fill."""
        nxt = self.next_seq
        if not self.pending or nxt is None:
            return
        if 0 < ((ack - nxt + HALF) & MASK) - HALF < MAX_WINDOW:
            self._skip_hole(ts, ack)

    def _reindex(self) -> None:
        self.anchor = self.next_seq if self.next_seq is not None else 0
        a = self.anchor
        self.order = [((s - a + HALF) & MASK) - HALF for s in self.pending]
        heapify(self.order)

    def _pop_first(self) -> tuple[int, tuple[bytes, int, int]]:
        """Remove the earliest pending segment: (its seq, (payload, wire len, ts))."""
        seq = (self.anchor + heappop(self.order)) & MASK
        seg = self.pending.pop(seq)
        self.pending_bytes -= len(seg[0])
        if not self.pending:
            self.order = None
        return seq, seg

    def _first(self) -> int:
        """The sequence number of the earliest pending segment."""
        return (self.anchor + self.order[0]) & MASK

    def _jump(self, seq: int, ts: int) -> None:
        """A segment out of any window's reach: flush what waits, then the distance is a gap."""
        self.stats.jumps += 1
        while self.pending:
            self._skip_hole(ts)
        hole = (seq - self.next_seq) & MASK
        if hole:
            self.stats.gaps += 1
            self.stats.gap_bytes += hole
            # How much is really missing is unknown (the numbers jumped): a consumer that
            # can tell a jump from a gap of known length is told so.
            jump = getattr(self.consumer, "jump", None)
            if jump is not None:
                jump(hole, ts)
            else:
                self.consumer.gap(hole, ts)
        self.next_seq = seq

    def _deliver(self, payload: bytes, wire_len: int, ts: int) -> None:
        self.next_seq = (self.next_seq + wire_len) & MASK
        if payload:
            self.consumer.data(payload, ts)
        if len(payload) < wire_len:
            self.stats.gaps += 1
            self.stats.gap_bytes += wire_len - len(payload)
            self.consumer.gap(wire_len - len(payload), ts)

    def _drain(self) -> None:
        """Deliver buffered segments that have become contiguous: O(log n) each."""
        pending = self.pending
        while pending:
            # Every pending segment starts after next_seq, or (when delivery ran into it)
            # before: the earliest is the only candidate.
            nxt = self.next_seq
            dist = ((self._first() - nxt + HALF) & MASK) - HALF
            if dist > 0:
                return
            _, (payload, wire_len, ts) = self._pop_first()
            if dist == 0:
                self._deliver(payload, wire_len, ts)
            elif dist + wire_len > 0:
                self.stats.overlaps += 1
                self._deliver(payload[-dist:], wire_len + dist, ts)
            else:
                self.stats.retransmitted += 1

    def _skip_hole(self, ts: int, upto: int | None = None) -> None:
        """Declare the hole before the earliest buffered segment (or before ``upto``, if that
        comes first) lost, and go on from there."""
        nxt = self.next_seq
        first = self._first()
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
