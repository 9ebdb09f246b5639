"""The worker runtime (stream_app/runtime/runtime.py) without a broker: ordering of offsets, when
offsets may be committed, and what happens when the store or the broker fails."""

from __future__ import annotations

import asyncio

import pytest

import stream_app.runtime.runtime as worker_mod
from schemas.kinds import NAMES
from schemas.records import PacketBatch
from stream_app.core.processor import CoreConfig
from stream_app.state.codec import Codec
from stream_app.state.store import MemoryStore
from stream_app.runtime.runtime import GAP, PublishFailed, Runtime, RuntimeConfig
from tests.test_flowstate import records_of

RECS = records_of("dpkt__http.pcap")


def batch(i: int) -> PacketBatch:
    return PacketBatch(1, b"", RECS[i:i + 1])


class FailingStore(MemoryStore):
    down = False

    def save(self, *a):
        if self.down:
            raise ConnectionError("store down")
        return super().save(*a)


def runtime(store=None) -> Runtime:
    return Runtime(store or MemoryStore(), Codec(b"k"), CoreConfig(detect=None),
                   RuntimeConfig(checkpoint_interval=0))


def test_a_batch_after_a_gap_is_refetched_not_applied(monkeypatch):
    async def go():
        rt = runtime()
        for i in range(3):
            assert await rt.apply("tp", "g:t:0", i, batch(i), i) is not None
        # Offset 6 arrives where 3 is due (fetched before a rebalance): seek back to 3.
        assert await rt.apply("tp", "g:t:0", 6, batch(6), 6) is GAP
        assert rt.expected("tp") == 3
        assert await rt.apply("tp", "g:t:0", 7, batch(7), 7) is GAP  # more of the stale ones
        assert await rt.apply("tp", "g:t:0", 3, batch(3), 3) is not None
        assert rt.owned["tp"].state.proc.packets == 4
        # A gap that is still there GAP_WAIT after the seek is real: counted, then accepted.
        monkeypatch.setattr(worker_mod, "GAP_WAIT", 0.0)
        assert await rt.apply("tp", "g:t:0", 9, batch(9), 9) is GAP
        assert await rt.apply("tp", "g:t:0", 9, batch(9), 9) is not None
        assert rt.stats["offsets_lost"] == 5
    asyncio.run(go())


def test_offsets_are_acked_only_once_the_snapshot_is_stored():
    async def go():
        store = FailingStore()
        rt = runtime(store)
        acked, flushed = [], []

        async def flush():
            flushed.append(True)

        async def ack(handles):
            acked.extend(handles)
        for i in range(3):
            await rt.apply("tp", "g:t:0", i, batch(i), f"h{i}")
        store.down = True
        assert await rt.checkpoint("tp", flush, ack) is False
        assert acked == [] and rt.stats["checkpoint_errors"] == 1
        await rt.apply("tp", "g:t:0", 3, batch(3), "h3")
        store.down = False
        assert await rt.checkpoint("tp", flush, ack) is True
        assert acked == ["h0", "h1", "h2", "h3"]
        meta, blobs = store.load("g:t:0")
        assert blobs and b"offset" in meta
    asyncio.run(go())


def test_results_the_broker_refused_stop_the_worker():
    async def go():
        rt = runtime()
        await rt.apply("tp", "g:t:0", 0, batch(0), "h0")

        async def flush():
            raise RuntimeError("broker said no")

        async def ack(handles):
            raise AssertionError("must not ack")
        with pytest.raises(PublishFailed):
            await rt.checkpoint("tp", flush, ack)
        assert rt.owned["tp"].pending == ["h0"]
    asyncio.run(go())


def test_a_fenced_partition_is_not_taken_back_until_assigned_again():
    async def go():
        store = MemoryStore()
        rt = runtime(store)
        await rt.apply("tp", "g:t:0", 0, batch(0), "h0")
        store.claim("g:t:0")  # another worker took it over

        async def noop(*_):
            return None
        assert await rt.checkpoint("tp", noop, noop) is False
        assert rt.stats["fenced"] == 1 and "tp" not in rt.owned
        assert await rt.apply("tp", "g:t:0", 1, batch(1), "h1") is None
        rt.assigned(["tp"])
        assert await rt.apply("tp", "g:t:0", 1, batch(1), "h1") is not None
    asyncio.run(go())


def test_core_processes_give_what_the_in_process_runtime_gives():
    """RemoteRuntime (--processes N): the same results and acks as Runtime, for batches of
    two partitions spread over two core processes, with an undecodable message and a
    checkpoint in the middle."""
    import msgspec

    from stream_app.runtime.processes import RemoteRuntime
    from stream_app.runtime.runtime import encode_results

    recs = records_of("zeek__wikipedia.pcap")
    end = recs[-1].ts_ns
    logs = {p: [msgspec.msgpack.encode(PacketBatch(1, b"", recs[i:i + 7]))
                for i in range(p, len(recs), 14)] for p in (0, 1)}
    for p in logs:
        logs[p].insert(3, b"\xc1 garbage")
        logs[p].append(msgspec.msgpack.encode(PacketBatch(1, b"", [], end_ns=end)))

    async def local():
        rt, out = runtime(), []
        dec = msgspec.msgpack.Decoder(PacketBatch)
        for p, log in logs.items():
            for off, raw in enumerate(log):
                try:
                    b = dec.decode(raw)
                except msgspec.DecodeError:
                    b = None
                res = await rt.apply(p, f"g:t:{p}", off, b, off)
                out += encode_results(res)
        return sorted(out)

    async def remote():
        rt = RemoteRuntime(MemoryStore(), b"k", CoreConfig(detect=None), 2,
                           RuntimeConfig(checkpoint_interval=0))
        out, acked = [], []

        async def seek(tp, off):
            raise AssertionError("no gap here")
        rt.bind(lambda g: out.extend((k, key, v) for (k, _), items in g.items()
                                     for key, v in items),
                seek, {**dict.fromkeys(NAMES, 3), "alerts": 1})

        async def flush():
            return None

        async def ack(handles):
            acked.extend(handles)
        for p, log in logs.items():
            for off, raw in enumerate(log):
                await rt.apply(p, f"g:t:{p}", off, raw, (p, off))
                if off == 5:
                    assert await rt.checkpoint(p, flush, ack)
        for p in logs:
            assert await rt.checkpoint(p, flush, ack)
        assert {o.child.index for o in rt.owned.values()} == {0, 1}  # one partition each
        assert sorted(acked) == [(p, off) for p in logs for off in range(len(logs[p]))]
        assert rt.stats["batches_undecodable"] == 2
        rt.close()
        return sorted(out)
    want = asyncio.run(local())
    assert want and asyncio.run(remote()) == want


def test_core_processes_refuse_a_layout_without_every_result_kind():
    """A result kind with no partition count would kill each core process at its first record
    of that kind; bind says which kind is missing instead."""
    from stream_app.runtime.processes import RemoteRuntime

    async def go():
        rt = RemoteRuntime(MemoryStore(), b"k", CoreConfig(detect=None), 1,
                           RuntimeConfig(checkpoint_interval=0))
        try:
            with pytest.raises(ValueError, match="dns, tls, ssh"):
                rt.bind(lambda g: None, None, {"flows": 3, "http": 3, "alerts": 1})
        finally:
            rt.close()
    asyncio.run(go())
