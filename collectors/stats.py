"""The collector's counters: plain integers in the packet path, snapshotted once a second.

Every datagram and every record is accounted, so that at any moment

    received = decoded + sum(dropped by reason)
    decoded  = filtered_out + published + sum(publish_dropped by reason) + queued

and after a graceful shutdown ``queued`` is 0. ``reconcile()`` checks both.
"""

from __future__ import annotations

import time
from collections import Counter

from collectors.decode import DROP_REASONS

# Datagrams refused before decoding, besides the decoder's own reasons.
ADMISSION_REASONS = ("source_not_allowed", "vni_not_allowed", "oversize")
DROP_REASONS_ALL = ADMISSION_REASONS + DROP_REASONS
# Decoded records that never reached the destination.
PUBLISH_DROP_REASONS = ("buffer_full", "delivery_failed", "too_large", "shutdown", "worker_crash")

COUNTERS = ("received", "decoded", "filtered_out", "published", "batches_submitted",
            "batches_published", "bytes_published", "publish_errors", "payload_full",
            "payload_cut", "payload_headers_only", "enrichment_misses",
            # acknowledged batches' time from submit to acknowledgement: sum (ms) and count, so
            # any interval's mean is (delta sum) / (delta count) (collectors/cloudwatch.py)
            "publish_latency_ms_sum", "publish_latency_count")


class Stats:
    __slots__ = COUNTERS + ("drops", "publish_dropped", "queued_records", "queued_bytes",
                            "kernel_drops", "kernel_rcvbuf_errors", "started")

    def __init__(self):
        for c in COUNTERS:
            setattr(self, c, 0)
        self.drops = Counter({r: 0 for r in DROP_REASONS_ALL})
        self.publish_dropped = Counter({r: 0 for r in PUBLISH_DROP_REASONS})
        self.queued_records = 0  # gauge: in partition batches + waiting for the destination
        self.queued_bytes = 0  # gauge: encoded bytes waiting for the destination
        self.kernel_drops = 0  # this process's socket: datagrams the kernel dropped
        self.kernel_rcvbuf_errors = 0  # the network namespace's UDP RcvbufErrors
        self.started = time.time()

    def snapshot(self) -> dict:
        d = {c: getattr(self, c) for c in COUNTERS}
        d["drops"] = dict(self.drops)
        d["publish_dropped"] = dict(self.publish_dropped)
        d["queued_records"] = self.queued_records
        d["queued_bytes"] = self.queued_bytes
        d["kernel_drops"] = self.kernel_drops
        d["kernel_rcvbuf_errors"] = self.kernel_rcvbuf_errors
        return d


def add_snapshots(a: dict, b: dict) -> dict:
    """Sum two snapshots (gauges add too: totals over workers)."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict):
            m = dict(out.get(k, {}))
            for kk, vv in v.items():
                m[kk] = m.get(kk, 0) + vv
            out[k] = m
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = out.get(k, 0) + v
    return out


def reconcile(s: dict) -> list[str]:
    """The accounting identities that do not hold for snapshot ``s`` (empty: all hold)."""
    problems = []
    dropped = sum(s["drops"].values())
    if s["received"] != s["decoded"] + dropped:
        problems.append(f"received {s['received']} != decoded {s['decoded']} + dropped {dropped}")
    pdrop = sum(s["publish_dropped"].values())
    rhs = s["filtered_out"] + s["published"] + pdrop + s["queued_records"]
    if s["decoded"] != rhs:
        problems.append(f"decoded {s['decoded']} != filtered_out {s['filtered_out']} + published "
                        f"{s['published']} + publish_dropped {pdrop} + queued {s['queued_records']}")
    return problems
