"""The stream worker's runtime, between a broker adapter (the Faust app, the Kinesis consumer)
and the core: which partitions this worker owns, their durable state, when to checkpoint.

Per partition, in order:
1. first batch after assignment: take the partition over in the store (its epoch fences the
   previous owner out) and restore its last snapshot (lazily: partitions nobody sends to cost
   nothing);
2. every batch: apply it (skipped when the snapshot already includes its offset), hand the
   results to the adapter to publish;
3. every ``checkpoint_interval`` seconds (or ``checkpoint_batches`` batches): wait until the
   results published so far are acknowledged by the broker, then write the snapshot, and only
   then let the adapter commit the offset. A crash anywhere in between replays from an offset
   at or below the snapshot's and makes the same records again, with the same ids.
4. on revocation or shutdown: a last checkpoint, then forget the partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec

from schemas.records import PacketBatch
from stream_app.core.detectors import Detectors
from stream_app.core.processor import CoreConfig, Results
from stream_app.state.partition import Codec, PartitionState, StateError
from stream_app.state.store import Fenced, StateLost

log = logging.getLogger("mirrorscope.worker")
NS = 1_000_000_000
GAP_WAIT = 10.0
GAP = object()
"""What ``Runtime.apply`` returns for a batch that must be fetched again from ``expected()``."""


class PublishFailed(Exception):
    """The broker did not take results already made; the worker must restart to make them
    again from its last snapshot."""


@dataclass
class RuntimeConfig:
    checkpoint_interval: float = 1.0
    """Seconds between snapshots of a partition that received data."""
    checkpoint_batches: int = 500
    """...or this many batches, whichever comes first."""
    contiguous_offsets: bool = True
    """Kafka: every offset holds a batch, so a jump means a batch fetched before a rebalance
    (see gap_verdict). Kinesis sequence numbers jump by design: False."""
    idle_advance: float = 30.0
    """A partition that has received nothing for this many wall-clock seconds moves its
    capture clock on by the time passed, so that idle flows end even when no later packet
    arrives. 0: never (replays that end with the end-of-capture marker need none)."""


@dataclass
class Owned:
    name: str
    epoch: int
    state: PartitionState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list = field(default_factory=list)
    """Broker handles (Faust events, Kinesis sequence numbers) applied, not yet checkpointed."""
    batches: int = 0
    dirty: bool = False
    last_ckpt: float = field(default_factory=time.monotonic)
    last_batch: float = field(default_factory=time.monotonic)
    gap_since: float | None = None
    saving: asyncio.Future | None = None
    """Set while a checkpoint is flushing and writing."""


class Runtime:
    """Owns partitions and their state. ``flush`` awaits the publication of every result
    handed out so far; ``ack`` lets the adapter commit the given broker handles."""

    def __init__(self, store, codec: Codec, core: CoreConfig, rt: RuntimeConfig | None = None,
                 detectors: Detectors | None = None):
        self.store = store
        self.codec = codec
        self.core = CoreConfig(flows=core.flows, l7=core.l7, detect=None)
        self.rt = rt or RuntimeConfig()
        self.detectors = detectors
        self.owned: dict[object, Owned] = {}
        self.stats: Counter = Counter()
        self.lag: dict[object, int] = {}
        self.fenced: set = set()
        """Partitions another worker took over; not taken back until assigned again."""

    # -- ownership ----------------------------------------------------------------------------
    async def _take(self, tp, name: str) -> Owned:
        t0 = time.monotonic()
        epoch, meta, blobs = await claim_and_load(self.store, name, self.stats)
        try:
            st = PartitionState.restore(name, self.core, self.codec, meta, blobs)
        except StateError as exc:
            # Refuse to guess: a state we cannot read would silently lose or double flows.
            self.stats["state_unreadable"] += 1
            raise RuntimeError(f"partition {name}: {exc}") from exc
        o = self.owned[tp] = Owned(name, epoch, st)
        self.stats["partitions_loaded"] += 1
        self.stats["flows_restored"] += len(blobs)
        log.info("partition taken over", extra={"partition": name, "epoch": epoch,
                                                "watermark": st.offset, "flows": len(blobs),
                                                "seconds": round(time.monotonic() - t0, 3)})
        return o

    def expected(self, tp) -> int:
        """The next offset ``tp``'s state needs."""
        return self.owned[tp].state.offset + 1

    def release(self, tp) -> None:
        self.owned.pop(tp, None)

    def assigned(self, tps) -> None:
        """A rebalance gave us these partitions: a fenced one may be taken again."""
        self.fenced -= set(tps)

    # -- batches ------------------------------------------------------------------------------
    async def apply(self, tp, name: str, offset: int, batch: PacketBatch | None,
                    handle) -> Results | None:
        """Apply a batch (None: an undecodable message, which only moves the offset on)."""
        o = self.owned.get(tp)
        if o is None:
            if tp in self.fenced:
                self.stats["batches_not_owned"] += 1
                return None
            o = await self._take(tp, name)
        async with o.lock:
            st = o.state
            if self.rt.contiguous_offsets and st.offset >= 0 and offset > st.offset + 1 \
                    and not gap_verdict(o, offset, st.offset + 1, self.stats):
                return GAP
            res = st.apply(offset, batch)
            o.pending.append(handle)
            if o.batches == 0 and not o.dirty:
                log.debug("first batch", extra={"partition": name, "offset": offset,
                                                "applied": res is not None})
            o.last_batch = time.monotonic()
            o.gap_since = None
            if res is None:
                self.stats["batches_replayed_skipped"] += 1
                return None
            o.dirty = True
            if batch is None:
                return res
            self.stats["batches"] += 1
            self.stats["packet_records"] += len(batch.records)
            o.batches += 1
            self._detect(res, st)
            self._count(res)
            return res

    def _detect(self, res: Results, st: PartitionState) -> None:
        if not detect_into(self.detectors, res, st):
            self.stats["detect_errors"] += 1

    async def finish(self, tp, handle) -> Results | None:
        """End of ``tp``'s input (a Kinesis shard closed by resharding, read to its end):
        report its open flows. ``handle`` is acked with the next checkpoint."""
        o = self.owned.get(tp)
        if o is None:
            return None
        async with o.lock:
            st = o.state
            res = st.proc.finish()
            self._detect(res, st)
            o.dirty = True
            o.pending.append(handle)
            self._count(res)
            return res

    def _count(self, res: Results) -> None:
        self.stats["flow_records"] += len(res.flows)
        self.stats["http_records"] += len(res.http)
        self.stats["alerts"] += len(res.alerts)

    def due(self, tp) -> bool:
        o = self.owned.get(tp)
        if o is None or not o.pending:
            return False
        return (o.batches >= self.rt.checkpoint_batches
                or time.monotonic() - o.last_ckpt >= self.rt.checkpoint_interval)

    async def checkpoint(self, tp, flush: Callable[[], Awaitable[None]],
                         ack: Callable[[list], Awaitable[None]]) -> bool:
        """Snapshot ``tp``; True when stored (and its handles acked).

        Only taking the snapshot holds the partition: batches go on being applied while the
        results are flushed and the snapshot written. One checkpoint per partition at a time:
        a call while one is under way waits for it, then takes its own."""
        o = self.owned.get(tp)
        if o is None:
            return False
        while o.saving is not None:
            await asyncio.shield(o.saving)
        async with o.lock:
            if not o.pending:
                return True
            handles, o.pending = o.pending, []
            st = o.state
            snap = st.snapshot() if o.dirty or st.saved != st.offset else None
            o.dirty = False
            o.batches = 0
            o.last_ckpt = time.monotonic()
            o.saving = asyncio.get_running_loop().create_future()
        try:
            return await self._store_snapshot(tp, o, snap, handles, flush, ack)
        finally:
            o.saving.set_result(None)
            o.saving = None

    async def _store_snapshot(self, tp, o: Owned, snap, handles, flush, ack) -> bool:
        try:
            await flush()  # the results of these batches are in the broker first
        except Exception as exc:
            # Results the broker refused cannot be made again from this state: only a
            # restart from the last snapshot replays them.
            self.stats["publish_failed"] += 1
            o.pending = handles + o.pending
            raise PublishFailed(f"partition {o.name}: results not delivered: {exc!r}") from exc
        try:
            if snap is not None:
                await self._save(o, snap)
        except Fenced:
            self.stats["fenced"] += 1
            log.warning("partition taken over by another worker: dropping it",
                        extra={"partition": o.name})
            self.fenced.add(tp)
            self.owned.pop(tp, None)
            return False
        except Exception as exc:  # Redis down: keep the handles, retry later
            self.stats["checkpoint_errors"] += 1
            o.pending = handles + o.pending
            o.dirty = True
            log.warning("checkpoint failed; will retry",
                        extra={"partition": o.name, "error": repr(exc)})
            return False
        await ack(handles)
        self.stats["checkpoints"] += 1
        log.debug("checkpoint", extra={"partition": o.name, "offset": o.state.saved,
                                       "handles": len(handles)})
        return True

    async def _save(self, o: Owned, snap) -> None:
        st = o.state
        try:
            await asyncio.to_thread(self.store.save, o.name, o.epoch, snap)
            st.saved_ok(snap)
        except StateLost:
            # Redis came back empty: the rest of the state goes in now, not bit by bit.
            self.stats["state_rewrites"] += 1
            log.warning("store had lost the partition's state; writing all of it",
                        extra={"partition": o.name})
            async with o.lock:
                full = st.snapshot(full=True)
            await asyncio.to_thread(self.store.save, o.name, o.epoch, full)
            st.saved_ok(full)

    def advance_idle(self, tp) -> Results | None:
        """Wall-clock fallback for partitions nothing arrives on (see RuntimeConfig)."""
        o = self.owned.get(tp)
        if o is None or not self.rt.idle_advance:
            return None
        idle = time.monotonic() - o.last_batch
        if idle < self.rt.idle_advance or not o.state.flows_held:
            return None
        t = o.state.proc.flows
        res = o.state.tick(t.now_ns + int(idle * NS))
        o.last_batch = time.monotonic()
        if res:
            o.dirty = True
            self._count(res)
        return res

    # -- metrics ------------------------------------------------------------------------------
    def flows_held(self) -> int:
        return sum(o.state.flows_held for o in self.owned.values())


async def claim_and_load(store, name: str, stats: Counter) -> tuple[int, bytes | None, dict]:
    """Take partition ``name`` over in the store and read its state: (epoch, meta, blobs).
    Without its state a partition cannot go on: this waits for the store, however long."""
    delay = 0.1
    while True:
        try:
            epoch = await asyncio.to_thread(store.claim, name)
            meta, blobs = await asyncio.to_thread(store.load, name)
            return epoch, meta, blobs
        except Exception as exc:
            stats["store_errors"] += 1
            log.warning("state store unavailable; retrying",
                        extra={"partition": name, "error": repr(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def gap_verdict(o, offset: int, expected: int, stats: Counter) -> bool:
    """Whether to apply a batch at ``offset`` where ``expected`` is due (``o``: the partition,
    with ``name`` and ``gap_since``). Our packet topics have no gaps (an idempotent producer
    without transactions, no compaction), so this is a batch fetched before a rebalance that
    outlived it: applying it would skip the batches in between. The adapter seeks back and
    this batch is dropped. Only a gap that lasts GAP_WAIT seconds after the seek is real
    (retention deleted what this partition's state still needed): counted as loss, then
    accepted."""
    now = time.monotonic()
    if o.gap_since is None:
        o.gap_since = now
        stats["offset_gaps"] += 1
        log.info("batch after a gap in offsets: seeking back",
                 extra={"partition": o.name, "expected": expected, "got": offset})
        return False
    if now - o.gap_since < GAP_WAIT:
        stats["batches_dropped_out_of_order"] += 1
        return False
    stats["offsets_lost"] += offset - expected
    log.error("offsets missing from the packet topic (retention?): their packets are lost",
              extra={"partition": o.name, "from": expected, "to": offset - 1})
    o.gap_since = None
    return True


def detect_into(detectors, res: Results, st: PartitionState) -> bool:
    """Run the detectors over ``res`` (setting its alerts); False when their state store
    failed, in which case the records still go, without alerts."""
    if detectors is None or not (res.flows or res.http):
        return True
    try:
        res.alerts = detectors.observe(res.flows, res.http, st.proc.flows.now_ns / NS)
        return True
    except Exception as exc:
        log.warning("detectors skipped a batch", extra={"error": repr(exc)})
        return False


def encode_results(res: Results) -> list[tuple[str, bytes, bytes]]:
    """(kind, key, value) per record: key = the record's deterministic id, so a replay's
    duplicates can be dropped downstream."""
    enc = msgspec.msgpack.encode
    out = [("flows", f.flow_id.encode(), enc(f)) for f in res.flows]
    out += [("http", h.http_id.encode(), enc(h)) for h in res.http]
    out += [("alerts", a.alert_id.encode(), enc(a)) for a in res.alerts]
    return out
