"""Partition state made durable (stream_app/state/partition.py, stream_app/state/store.py): a capture
split into partitions, with the owner crashing at random points and its successor restoring
the last snapshot and replaying from an earlier offset, gives the same flow and HTTP records
as one Processor over the whole file: nothing lost, nothing counted twice."""

from __future__ import annotations

import random

import msgspec
import pytest

from collectors.capture import open_capture
from collectors.decode import Decoder
from collectors.flowkey import flow_key, partition_key
from collectors.partition import kafka_partition
from collectors.source import capture_batches
from schemas.records import PACKET_BATCH_VERSION, PacketBatch
from stream_app.core.processor import CoreConfig, Processor
from stream_app.adapters.embedded import payload_policy
from stream_app.state.codec import Codec, StateError
from stream_app.state.partition import PartitionState
from stream_app.state.store import Fenced, MemoryStore, StateLost
from tests.conftest import CORPUS

CAPTURES = ["zeek__wikipedia.pcap", "dpkt__http.pcap", "zeek__http_methods.pcap",
            "sv__http-all-headers__input.pcap"]
CODEC = Codec(b"test-key")
CONFIG = CoreConfig(detect=None)


def records_of(name: str):
    dec = Decoder(payload=payload_policy(CONFIG.l7))
    out = []
    for recs in capture_batches(open_capture(CORPUS / name), dec):
        out.extend(recs)
    return out


def partitioned(recs, parts: int = 4, per_batch: int = 3):
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


def reference(recs):
    proc = Processor(CONFIG)
    res = proc.process(recs)
    end = proc.finish()
    return ({f.flow_id: f for f in res.flows + end.flows},
            {h.http_id: h for h in res.http + end.http})


def by_id(results, flows, http):
    for r in results:
        for f in r.flows:
            assert flows.setdefault(f.flow_id, f) == f, "a replayed flow record differs"
        for h in r.http:
            assert http.setdefault(h.http_id, h) == h


def run_partition(name, log, store, rng, crash_p):
    """Apply a partition's log through crashes: returns every result made (with duplicates)."""
    results = []
    crashes = 0
    epoch = store.claim(name)
    st = PartitionState.restore(name, CONFIG, CODEC, *store.load(name))
    committed = 0  # the broker's committed offset: only moved after a snapshot is stored
    off = committed
    while off < len(log):
        res = st.apply(off, log[off])
        if res is not None:
            results.append(res)
        off += 1
        if rng.random() < 0.3:
            snap = st.snapshot()
            store.save(name, epoch, snap)
            st.saved_ok(snap)
            committed = rng.randint(committed, snap.offset + 1)  # commit lags, never leads
        if rng.random() < crash_p:  # SIGKILL: memory gone; the next owner takes over
            crashes += 1
            epoch = store.claim(name)
            st = PartitionState.restore(name, CONFIG, CODEC, *store.load(name))
            off = committed
    snap = st.snapshot()  # the owner's last checkpoint (on revocation or shutdown)
    store.save(name, epoch, snap)
    st.saved_ok(snap)
    return results, crashes


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crashes_lose_nothing_and_count_nothing_twice(capture, seed):
    recs = records_of(capture)
    want_flows, want_http = reference(recs)
    store = MemoryStore()
    rng = random.Random(seed)
    flows, http = {}, {}
    crashes = 0
    for p, log in partitioned(recs).items():
        results, n = run_partition(f"g:t:{p}", log, store, rng, crash_p=0.15)
        by_id(results, flows, http)
        crashes += n
    assert crashes >= 1
    assert set(flows) == set(want_flows)
    assert flows == want_flows  # packets, bytes, states, reasons: all equal
    assert http == want_http
    # Every partition ended with the marker, so its state holds no flow.
    for d in store.data.values():
        assert d["flows"] == {}


def test_snapshots_write_only_what_changed():
    recs = records_of("zeek__wikipedia.pcap")
    st = PartitionState("g:t:0", CONFIG, CODEC)
    st.apply(0, PacketBatch(1, b"", recs[:100]))
    s1 = st.snapshot()
    st.saved_ok(s1)
    assert s1.put and not s1.delete
    s2 = st.snapshot()
    assert not s2.put and not s2.delete  # nothing happened since
    st.apply(1, PacketBatch(1, b"", recs[100:101]))
    s3 = st.snapshot()
    assert len(s3.put) == 1  # the one flow that packet touched
    st.saved_ok(s3)
    st.apply(2, PacketBatch(1, b"", [], end_ns=recs[-1].ts_ns))
    s4 = st.snapshot()
    assert not s4.put and len(s4.delete) == len(s1.put | s3.put)


def test_replayed_batch_is_skipped():
    recs = records_of("dpkt__http.pcap")
    st = PartitionState("g:t:0", CONFIG, CODEC)
    assert st.apply(0, PacketBatch(1, b"", recs[:5])) is not None
    assert st.apply(0, PacketBatch(1, b"", recs[:5])) is None
    assert st.skipped == 1 and st.proc.packets == 5


def test_state_signed_with_another_key_is_refused():
    recs = records_of("dpkt__http.pcap")
    st = PartitionState("g:t:0", CONFIG, CODEC)
    st.apply(0, PacketBatch(1, b"", recs[:5]))
    snap = st.snapshot()
    with pytest.raises(StateError, match="integrity"):
        PartitionState.restore("g:t:0", CONFIG, Codec(b"other"), snap.meta, snap.put)
    tampered = {k: v[:-1] + bytes([v[-1] ^ 1]) for k, v in snap.put.items()}
    with pytest.raises(StateError):
        PartitionState.restore("g:t:0", CONFIG, CODEC, snap.meta, tampered)


def test_old_owner_is_fenced_and_lost_store_is_reported():
    store = MemoryStore()
    st = PartitionState("g:t:0", CONFIG, CODEC)
    e1 = store.claim("g:t:0")
    store.claim("g:t:0")  # another worker took the partition over
    with pytest.raises(Fenced):
        store.save("g:t:0", e1, st.snapshot())
    store.data.clear()  # the store lost everything
    with pytest.raises(StateLost):
        store.save("g:t:0", e1, st.snapshot())


def test_blob_holds_one_flow_only():
    """Shared objects are references: a flow's blob does not drag the table along."""
    recs = records_of("zeek__wikipedia.pcap")
    st = PartitionState("g:t:0", CONFIG, CODEC)
    st.apply(0, PacketBatch(1, b"", recs))
    snap = st.snapshot()
    biggest = max(len(b) for b in snap.put.values())
    assert biggest < 64 * 1024, biggest
    assert msgspec.msgpack.decode(snap.meta)["offset"] == 0  # the offset in the meta
