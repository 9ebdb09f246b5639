"""Embedded and distributed make the same DNS records: a capture split into partitions as a
collector publishes it, each partition's owner snapshotting its state and crashing at random
points (its successor restoring the last snapshot and replaying from the committed offset), gives
the same DnsTransaction records by id as one Processor over the whole capture. The DNS analyzers'
state (pending queries, TCP framing mid-message) therefore survives a snapshot and restore in the
middle of the flows. The worker runs this same PartitionState (tests/test_worker_kafka.py)."""

from __future__ import annotations

import random
import struct

import pytest

from collectors.capture import open_capture
from collectors.decode import Decoder
from collectors.source import capture_batches
from stream_app.adapters.embedded import payload_policy
from stream_app.core.processor import Processor
from stream_app.state.store import MemoryStore
from tests.conftest import CORPUS
from tests.craft import TcpConversation, udp_frame, write_pcap
from tests.test_dns import query, response, rr
from tests.test_flowstate import CONFIG, partitioned, run_partition


def records(path):
    dec = Decoder(payload=payload_policy(CONFIG.l7))
    return [r for b in capture_batches(open_capture(path), dec) for r in b]


def crafted(tmp_path):
    """UDP lookups interleaved with a DNS-over-TCP connection whose messages span segments."""
    frames = []
    t = 1.0
    for i in range(30):
        frames.append((t, udp_frame("10.0.0.1", "10.0.0.53", 30000 + i % 5, 53,
                                    query(f"h{i}.example.com", i))))
        t += 0.001
        if i % 4:
            frames.append((t, udp_frame("10.0.0.53", "10.0.0.1", 53, 30000 + i % 5,
                                        response(f"h{i}.example.com",
                                                 [rr(f"h{i}.example.com", 1, ip=b"\x0a\x00\x00\x07")], i))))
            t += 0.001
    c = TcpConversation("10.0.0.1", "10.0.0.53", 41000, 53).handshake()
    for i in range(6):
        m = query(f"t{i}.example.com", 100 + i)
        framed = struct.pack("!H", len(m)) + m
        c.client(framed[:9])
        c.client(framed[9:])
        r = response(f"t{i}.example.com", [], 100 + i, rcode=3)
        c.server(struct.pack("!H", len(r)) + r)
    c.close()
    tcp = c.frames(t0=t, step=0.001)
    # Interleave the TCP segments with the UDP datagrams (capture order by time).
    merged = sorted(frames + [(ts + 0.0005 * k, f) for k, (ts, f) in enumerate(tcp)],
                    key=lambda x: x[0])
    return write_pcap(tmp_path / "mixed.pcap", merged)


@pytest.mark.parametrize("capture", ["zeek__wikipedia.pcap", "sv__vxlan-decoder-03__vxlan.pcap",
                                     "dpkt__nb6-http.pcap", "crafted"])
@pytest.mark.parametrize("seed", [1, 2])
def test_same_dns_records_by_id_through_crashes(capture, seed, tmp_path):
    path = crafted(tmp_path) if capture == "crafted" else CORPUS / capture
    recs = records(path)
    proc = Processor(CONFIG)
    ref = proc.process(recs).dns + proc.finish().dns
    want = {d.dns_id: d for d in ref}
    assert len(want) == len(ref) and want
    store = MemoryStore()
    rng = random.Random(seed)
    got: dict = {}
    crashes = 0
    for p, log in partitioned(recs, per_batch=2).items():
        results, n = run_partition(f"g:dns:{p}", log, store, rng, crash_p=0.2)
        crashes += n
        for res in results:
            for d in res.dns:
                assert got.setdefault(d.dns_id, d) == d, "a replayed DNS record differs"
    assert crashes >= 1
    assert got == want
    if capture == "crafted":
        assert sum(d.transport == "tcp" for d in got.values()) == 6
