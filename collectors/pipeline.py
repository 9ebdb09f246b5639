"""Decoded records -> local filter -> inner-flow partition -> per-partition batches -> publisher.

The partition of a record is a pure function of its inner flow (VNI, protocol, addresses,
ports) and of the destination's layout (partition or shard count), and the filter's verdict
is a pure function of the same fields plus the direction; both are memoised per directional
5-tuple, so the per-packet cost is one tuple and one dictionary lookup. Both directions of a
flow share the symmetric key (collectors.flowkey), so they land in one partition whichever
collector process or host received them.

A partition's batch is handed to the publisher when it holds ``batch.max_records`` records,
reaches ``batch.max_bytes`` (estimated encoded size), or its oldest record has waited
``batch.linger_ms``. Batches never mix partitions and keep arrival order.
"""

from __future__ import annotations

import time

from collectors.config import BatchConfig
from collectors.flowkey import flow_key, partition_key
from collectors.stats import Stats

RECORD_OVERHEAD = 64  # encoded bytes of a record besides its payload (IPv4 ~50, IPv6 ~75)
ROUTE_CACHE_MAX = 1 << 20


def batch_key(records) -> bytes:
    """The Kafka message key / Kinesis partition key of a batch: its first record's."""
    return partition_key(flow_key(records[0])[0])


class Pipeline:
    def __init__(self, batch: BatchConfig, publisher, stats: Stats, mfilter=None,
                 block_when_full: bool = False):
        self.cfg = batch
        self.publisher = publisher
        self.stats = stats
        self.filter = mfilter
        self.block = block_when_full
        self._max_records = batch.max_records
        self._max_bytes = batch.max_bytes
        self._linger = batch.linger_ms / 1000.0
        self._route: dict[tuple, int] = {}
        self._layout = None
        self._reset_layout()

    def _reset_layout(self) -> None:
        n = self.publisher.partitions
        self._layout = self.publisher.layout_version
        self._route.clear()
        self._pend: list[list] = [[] for _ in range(n)]
        self._size = [0] * n
        self._first = [0.0] * n

    # -- the packet path -------------------------------------------------------------------
    def _route_new(self, k: tuple, r) -> int:
        if len(self._route) >= ROUTE_CACHE_MAX:
            self._route.clear()
        if self.filter is not None and not self.filter.accepts(r):
            p = -1
        else:
            p = self.publisher.partition_for(partition_key(flow_key(r)[0]))
        self._route[k] = p
        return p

    def add(self, records: list, now: float) -> None:
        """Route and batch records (in arrival order). ``now``: time.monotonic()."""
        route = self._route
        pend = self._pend
        size = self._size
        first = self._first
        maxr = self._max_records
        maxb = self._max_bytes
        filtered = full = cut = hdr = 0
        for r in records:
            k = (r.vni, r.proto, r.src, r.sport, r.dst, r.dport, r.direction)
            p = route.get(k)
            if p is None:
                p = self._route_new(k, r)
            if p < 0:
                filtered += 1
                continue
            n = len(r.payload)
            pl = r.payload_len
            if pl:
                if n == pl:
                    full += 1
                elif n:
                    cut += 1
                else:
                    hdr += 1
            lst = pend[p]
            if not lst:
                first[p] = now
            lst.append(r)
            s = size[p] + n + RECORD_OVERHEAD
            size[p] = s
            if s >= maxb or len(lst) >= maxr:
                self._emit(p)
        st = self.stats
        st.filtered_out += filtered
        st.payload_full += full
        st.payload_cut += cut
        st.payload_headers_only += hdr

    def _emit(self, p: int) -> None:
        recs = self._pend[p]
        est = self._size[p]
        self._pend[p] = []
        self._size[p] = 0
        self.stats.batches_submitted += 1
        self.publisher.submit(p, batch_key(recs), recs, est, block=self.block)

    # -- housekeeping ----------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Send the batches whose oldest record has waited the linger time; adopt a new
        destination layout (partition or shard count) when the publisher reports one."""
        if self.publisher.layout_version != self._layout:
            self.flush_all()
            self._reset_layout()
            return
        deadline = now - self._linger
        first = self._first
        pend = self._pend
        for p in range(len(pend)):
            if pend[p] and first[p] <= deadline:
                self._emit(p)

    def flush_all(self) -> None:
        for p in range(len(self._pend)):
            if self._pend[p]:
                self._emit(p)

    def pending_records(self) -> int:
        return sum(len(x) for x in self._pend)


def monotonic() -> float:
    return time.monotonic()
