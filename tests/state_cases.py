"""The captures and partition logs that the flow state format tests share: the fixture
generators under tests/data/state-v*/ and tests/test_state_format.py build the same batches
from them, so a blob written by one release is continued on exactly the packets that
followed it."""

from __future__ import annotations

import random

from collectors.capture import open_capture
from collectors.decode import Decoder
from collectors.flowkey import flow_key, partition_key
from collectors.partition import kafka_partition
from collectors.source import capture_batches
from schemas.records import PACKET_BATCH_VERSION, PacketBatch
from tests.conftest import CORPUS

PARTS = 4
PER_BATCH = 3

# (capture, reorder seed): a seed swaps some neighbouring packets, as a mirror delivers them,
# so that states hold out-of-order segments (Direction.pending) and segments waiting for the
# other direction (HttpAnalyzer.waiting), not only in-order parser state.
CASES = [
    ("zeek__wikipedia.pcap", 0),
    ("zeek__wikipedia.pcap", 7),
    ("dpkt__http.pcap", 3),
    ("zeek__http_methods.pcap", 5),
    ("sv__http-all-headers__input.pcap", 0),
    ("zeek-http/100-continue.pcap", 11),
    ("zeek-http/get_nosyn.pcap", 0),
    ("zeek-http/curl_http_09.pcap", 0),
    ("zeek-http/connect-with-header.pcap", 2),
]


def case_id(capture: str, seed: int) -> str:
    return f"{capture.replace('/', '_').removesuffix('.pcap')}-s{seed}"


def records_of(capture: str, seed: int = 0) -> list:
    # The payload policy of embedded mode with HTTP on (every TCP payload, whole).
    from stream_app.adapters.embedded import payload_policy
    from stream_app.core.l7 import L7Config
    dec = Decoder(payload=payload_policy(L7Config()))
    out = []
    for recs in capture_batches(open_capture(CORPUS / capture), dec):
        out.extend(recs)
    if seed:
        # Some packets arrive one to three places late (as mirror copies do).
        rng = random.Random(seed)
        i = 0
        while i < len(out) - 1:
            if rng.random() < 0.15:
                late = out.pop(i)
                out.insert(min(len(out), i + rng.randint(1, 3)), late)
                i += 3
            i += 1
    return out


def partition_logs(recs, parts: int = PARTS, per_batch: int = PER_BATCH):
    """What a collector publishes: per partition, batches in capture order, then the end
    marker carrying the capture's last time."""
    by_p: dict[int, list] = {p: [] for p in range(parts)}
    for r in recs:
        by_p[kafka_partition(partition_key(flow_key(r)[0]), parts)].append(r)
    end = max(r.ts_ns for r in recs)
    logs = {}
    for p, rs in by_p.items():
        batches = [PacketBatch(PACKET_BATCH_VERSION, b"", rs[i:i + per_batch])
                   for i in range(0, len(rs), per_batch)]
        batches.append(PacketBatch(PACKET_BATCH_VERSION, b"", [], end_ns=end))
        logs[p] = batches
    return logs
