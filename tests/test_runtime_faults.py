"""The runtime under faults (issue 20), without a broker: a batch is applied whole or not at
all before its offset moves, a dead core process is replaced without losing a flow, and
readiness says so while it matters.

The core raising on a batch is a core bug (the core's contract is never to raise): the test
makes the real Processor raise half-way through one batch, after changing the state with the
first half of its packets, which is the state a real such bug leaves behind."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import msgspec

from schemas.kinds import NAMES
from schemas.records import PacketBatch
from stream_app.core.processor import CoreConfig, Processor
from stream_app.runtime.runtime import GAP, Runtime, RuntimeConfig, encode_results
from stream_app.state.codec import Codec
from stream_app.state.store import MemoryStore
from tests.test_flowstate import records_of

RECS = records_of("zeek__wikipedia.pcap")


def batches(per: int = 7) -> list[PacketBatch]:
    out = [PacketBatch(1, b"", RECS[i:i + per]) for i in range(0, len(RECS), per)]
    out.append(PacketBatch(1, b"", [], end_ns=RECS[-1].ts_ns))
    return out


def records(results) -> dict[bytes, bytes]:
    """Records by id: a replay makes the same records again with the same ids."""
    return {key: value for kind, key, value in results}


async def reference(log: list) -> dict[bytes, bytes]:
    rt = Runtime(MemoryStore(), Codec(b"k"), CoreConfig(detect=None))
    out = []
    for off, b in enumerate(log):
        out += encode_results(await rt.apply("tp", "g:t:0", off, b, off))
    return records(out)


def test_a_batch_the_core_raises_on_is_skipped_whole_and_its_offset_never_acked_early(
        monkeypatch):
    log = batches()
    poison = 5
    real = Processor.process

    def process(self, recs):
        if recs is log[poison].records:  # half the batch goes in, then the core breaks
            real(self, recs[:len(recs) // 2])
            raise RecursionError("maximum recursion depth exceeded")
        return real(self, recs)
    monkeypatch.setattr(Processor, "process", process)

    async def go():
        store = MemoryStore()
        rt = Runtime(store, Codec(b"k"), CoreConfig(detect=None),
                     RuntimeConfig(checkpoint_interval=0))
        acked, out = [], []

        async def flush():
            return None

        async def ack(handles):
            acked.extend(handles)
        for off in range(3):
            out += encode_results(await rt.apply("tp", "g:t:0", off, log[off], ("a", off)))
        assert await rt.checkpoint("tp", flush, ack)
        for off in (3, 4):
            out += encode_results(await rt.apply("tp", "g:t:0", off, log[off], ("a", off)))
        # The core raises half-way through batch 5: the partition goes back to its snapshot
        # (offset 2), and the adapter is told to fetch again from there.
        assert await rt.apply("tp", "g:t:0", poison, log[poison], ("a", poison)) is GAP
        assert rt.stats["batches_failed"] == 1
        assert rt.expected("tp") == 3
        assert await rt.checkpoint("tp", flush, ack)
        assert acked == [("a", 0), ("a", 1), ("a", 2)]  # nothing past the half-applied batch
        for off in range(3, len(log)):  # the replay: batch 5 is skipped whole this time
            res = await rt.apply("tp", "g:t:0", off, log[off], ("b", off))
            out += encode_results(res)
        assert rt.stats["batches_failed_skipped"] == 1 and rt.stats["batches_failed"] == 1
        assert await rt.checkpoint("tp", flush, ack)
        assert acked == [("a", 0), ("a", 1), ("a", 2)] + [("b", o) for o in range(3, len(log))]
        return records(out)
    got = asyncio.run(go())
    # Exactly what a worker makes that never saw batch 5: none of its half went in.
    skipped = list(log)
    skipped[poison] = None
    monkeypatch.setattr(Processor, "process", real)
    assert got == asyncio.run(reference(skipped))
    assert got != asyncio.run(reference(log))  # (the batch mattered)


def test_a_stalled_partition_makes_the_worker_not_ready():
    async def go():
        rt = Runtime(MemoryStore(), Codec(b"k"), CoreConfig(detect=None),
                     RuntimeConfig(stall_after=0.2))
        log = batches()
        await rt.apply("tp", "g:t:0", 0, log[0], 0)
        rt.set_lag("tp", 0)
        assert rt.health() == (True, [])
        rt.set_lag("tp", 12)  # the broker holds 12 more batches ...
        assert rt.health()[0] and not rt.stalled()  # (not yet: it may be applying them)
        await asyncio.sleep(0.25)  # ... and nothing was applied for stall_after
        ready, problems = rt.health()
        assert not ready and rt.stalled() == ["tp"]
        assert "stalled" in problems[0] and "lag 12" in problems[0]
        await rt.apply("tp", "g:t:0", 1, log[1], 1)  # it moves again
        assert rt.health() == (True, [])
    asyncio.run(go())


def test_a_killed_core_process_is_replaced_and_no_flow_is_lost():
    """--processes 2: SIGKILL one core process mid-stream. Its partitions are restored from
    their snapshots on a live core, fetched again from there (the runtime asks the adapter to
    seek), and the records by id are exactly those of an undisturbed run; /readyz says what
    happened while it matters."""
    from stream_app.runtime.processes import RemoteRuntime

    logs = {p: [msgspec.msgpack.encode(b) for b in batches(5 + p)] for p in (0, 1)}
    decoded = {p: [msgspec.msgpack.decode(raw, type=PacketBatch) for raw in log]
               for p, log in logs.items()}

    async def local(p):
        return await reference(decoded[p])

    async def remote():
        rt = RemoteRuntime(MemoryStore(), b"k", CoreConfig(detect=None), 2,
                           RuntimeConfig(checkpoint_interval=0, stall_after=30))
        out, acked, seeks = [], [], {}

        async def seek(tp, off):
            seeks[tp] = off
        rt.bind(lambda g: out.extend((k, key, v) for (k, _), items in g.items()
                                     for key, v in items),
                seek, {**dict.fromkeys(NAMES, 3), "alerts": 1})

        async def flush():
            await asyncio.sleep(0.05)  # replies in flight arrive

        async def ack(handles):
            acked.extend(handles)
        cursor = {0: 0, 1: 0}
        killed = False
        quiet = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # An adapter's loop: send the next batch of each partition, and go back when the
            # runtime asks for a seek (its replies, and so its seeks, come asynchronously).
            sent = False
            for p, log in logs.items():
                if p in seeks:
                    cursor[p] = seeks.pop(p)
                if cursor[p] >= len(log):
                    continue
                off = cursor[p]
                await rt.apply(p, f"g:t:{p}", off, log[off], (p, off))
                cursor[p] += 1
                sent = True
                if off == 6:
                    assert await rt.checkpoint(p, flush, ack)
            if not killed and min(cursor.values()) >= 10:
                victim = rt.owned[0].child
                os.kill(victim.proc.pid, signal.SIGKILL)
                killed = True
                while rt.stats["core_crashes"] == 0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                ready, problems = rt.health()
                assert not ready and "core process" in problems[0]
                assert victim not in rt.cores and len(rt.cores) == 2
            if sent:
                quiet = 0
                await asyncio.sleep(0)
            else:  # at the end: wait for the last replies (and the seeks they may ask for)
                quiet += 1
                if quiet > 20:
                    break
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        for p in logs:
            assert await rt.checkpoint(p, flush, ack)
        assert killed and rt.stats["core_crashes"] == 1
        # Every offset acked once a snapshot holds it, none lost.
        assert {h for h in acked} == {(p, o) for p in logs for o in range(len(logs[p]))}
        rt.close()
        return records(out)
    got = asyncio.run(remote())
    want = asyncio.run(local(0))
    want.update(asyncio.run(local(1)))
    assert got == want
