"""The stream worker's runtime, between a broker adapter (the Faust app, the Kinesis consumer)
and the core: which partitions this worker owns, their durable state, when to checkpoint.
One implementation, whether the partitions' states live in this process or in N core
processes (runtime/cores.py, runtime/processes.py): the runtime talks to them in typed
messages (runtime/messages.py) and keeps one ownership record per partition.

Per partition, in order:
1. first batch after assignment: take the partition over in the store (its epoch fences the
   previous owner out) and restore its last snapshot in a core (lazily: partitions nobody
   sends to cost nothing);
2. every batch: apply it (skipped when the snapshot already includes its offset), hand the
   results to the adapter to publish;
3. every ``checkpoint_interval`` seconds (or ``checkpoint_batches`` batches): take a snapshot,
   wait until the results published so far are acknowledged by the broker, then write the
   snapshot, and only then let the adapter commit the offsets of the batches it includes. A
   crash anywhere in between replays from an offset at or below the snapshot's and makes the
   same records again, with the same ids;
4. on revocation or shutdown: a last checkpoint, then forget the partition.

A batch is applied whole or not at all before its offset moves: if the core raises on one
(it should not), the partition's state, which that batch may have half changed, is dropped
unsaved, the handles since the last checkpoint are not acked, the partition is restored from
its last snapshot and replayed from there, and the batch that raised is skipped whole
(``batches_failed``). Results made again on the way carry the same ids.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from schemas.records import PacketBatch
from stream_app.core.detectors import Detectors
from stream_app.core.processor import CoreConfig, Results
from stream_app.runtime.cores import LocalCore, CoreServer, detect_into, encode_results  # noqa: F401
from stream_app.runtime.messages import (
    Advance, Applied, Apply, Failed, Finish, Gap, Release, Reply, Restore, RestoreFailed, Saved,
    Skipped, SnapshotTaken, TakeSnapshot,
)
from stream_app.state.codec import Codec
from stream_app.state.partition import Snapshot
from stream_app.state.store import Fenced, StateLost

log = logging.getLogger("mirrorscope.worker")
NS = 1_000_000_000
GAP_WAIT = 10.0


class Outcome(enum.Enum):
    """What ``Runtime.apply`` returns instead of Results when the batch was not applied."""

    GAP = "gap"
    """Fetch again from ``expected()`` (the runtime also calls the ``seek`` it was bound to):
    the batch came after a gap in offsets, or the partition went back to its snapshot."""
    AGAIN = "again"
    """(internal) A gap judged real just now: apply the same batch, forced."""
    RESTORE = "restore"
    """(internal) The core raised on the batch: restore the partition from its snapshot."""


GAP = Outcome.GAP


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
    stall_after: float = 60.0
    """A partition with lag whose applied offset has not moved for this many seconds is
    stalled: readiness turns false (see Runtime.health)."""


@dataclass
class Partition:
    """The one ownership record of a partition this worker holds."""

    name: str
    epoch: int
    tid: int
    """The partition's id in its core's messages."""
    core: object
    """Where its state lives: a LocalCore, or a CoreProcess."""
    offset: int = -1
    """The last offset applied (as the core answered)."""
    pending: list = field(default_factory=list)
    """Broker handles (Faust events, Kinesis sequence numbers) applied, not yet checkpointed."""
    batches: int = 0
    dirty: bool = False
    flows_held: int = 0
    last_ckpt: float = field(default_factory=time.monotonic)
    last_batch: float = field(default_factory=time.monotonic)
    gap_since: float | None = None
    force: bool = False
    saving: asyncio.Future | None = None
    """Set while a checkpoint is flushing and writing."""
    since_snapshot: Counter = field(default_factory=Counter)
    """What the batches applied after the last snapshot added to the runtime's counters: taken
    back when the partition returns to that snapshot, so a replay counts its records once."""

    @property
    def state(self):
        """The PartitionState itself (in-process core only: tests and debugging)."""
        return self.core.server.states[self.tid]

    @property
    def child(self):
        """The core holding it (a CoreProcess with --processes N)."""
        return self.core


class Runtime:
    """Owns partitions and their state. ``flush`` awaits the publication of every result
    handed out so far; ``ack`` lets the adapter commit the given broker handles.

    In process (the default): ``apply`` returns the batch's Results (None for a replayed or
    unowned batch; GAP after a gap). With core processes (``cores``, see
    runtime/processes.py) ``apply`` returns once the batch is sent, and the results go to the
    ``publish`` callback given to ``bind`` as the replies come."""

    def __init__(self, store, codec: Codec | None, core: CoreConfig,
                 rt: RuntimeConfig | None = None, detectors: Detectors | None = None,
                 cores: list | None = None):
        self.store = store
        self.core = CoreConfig(flows=core.flows, l7=core.l7, detect=None)
        self.rt = rt or RuntimeConfig()
        self.detectors = detectors
        self.cores = cores or [LocalCore(CoreServer(codec, self.core, detectors,
                                                    self.rt.contiguous_offsets))]
        self.owned: dict[object, Partition] = {}
        self.stats: Counter = Counter()
        self.lag: dict[object, int] = {}
        self.fenced: set = set()
        """Partitions another worker took over; not taken back until assigned again."""
        self.failed: dict[object, set[int]] = {}
        """Per partition, offsets of batches the core raised on: skipped whole on replay."""
        self.problems: dict[str, tuple[str, float | None]] = {}
        """What makes this worker not ready (a crashed agent, a dead core process), with
        when it stops counting (None: until the process restarts). See ``problem``."""
        self._progress: dict[object, float] = {}
        self._lag_since: dict[object, float] = {}
        self._tids: dict[object, int] = {}
        self._publish: Callable | None = None
        self._seek: Callable | None = None

    def bind(self, publish_grouped: Callable | None = None, seek: Callable | None = None,
             partitions: dict[str, int] | None = None) -> None:
        """``publish_grouped({(kind, partition): [(key, value)]})``: results from core
        processes; ``seek(tp, offset)``: a coroutine that makes the adapter fetch ``tp`` again
        from ``offset``; ``partitions``: the result topics' partition counts, by kind."""
        self._publish = publish_grouped
        self._seek = seek

    # -- ownership ----------------------------------------------------------------------------
    def _tid(self, tp) -> int:
        t = self._tids.get(tp)
        if t is None:
            t = self._tids[tp] = len(self._tids)
        return t

    def _pick_core(self):
        """The live core holding the fewest partitions: an even share for each."""
        held = Counter(id(p.core) for p in self.owned.values())
        live = [c for c in self.cores if c.alive]
        if not live:
            raise RuntimeError("no core process left")
        return min(live, key=lambda c: (held[id(c)], c.index))

    async def _take(self, tp, name: str) -> Partition:
        t0 = time.monotonic()
        epoch, meta, blobs = await claim_and_load(self.store, name, self.stats)
        tid = self._tid(tp)
        core = self._pick_core()
        reply = await self._ask(core, Restore(tid, name, meta, blobs))
        if isinstance(reply, RestoreFailed) or not hasattr(reply, "offset"):
            # Refuse to guess: a state we cannot read would silently lose or double flows.
            self.stats["state_unreadable"] += 1
            raise RuntimeError(f"partition {name}: {getattr(reply, 'error', reply)}")
        p = self.owned[tp] = Partition(name, epoch, tid, core, offset=reply.offset)
        self.stats["partitions_loaded"] += 1
        self.stats["flows_restored"] += len(blobs)
        log.info("partition taken over", extra={"partition": name, "epoch": epoch,
                                                "watermark": reply.offset, "flows": len(blobs),
                                                "core": core.index,
                                                "seconds": round(time.monotonic() - t0, 3)})
        return p

    async def _ask(self, core, msg) -> Reply:
        fut = asyncio.get_running_loop().create_future()
        core.request(msg, None, fut.set_result)
        return await fut

    def expected(self, tp) -> int:
        """The next offset ``tp``'s state needs."""
        return self.owned[tp].offset + 1

    def release(self, tp) -> None:
        p = self.owned.pop(tp, None)
        if p is not None:
            p.core.send(Release(p.tid))

    def assigned(self, tps) -> None:
        """A rebalance gave us these partitions: a fenced one may be taken again."""
        self.fenced -= set(tps)

    def close(self) -> None:
        """Stop the cores (core processes; nothing to do in process)."""

    def core_died(self, core) -> None:
        """A core process is gone, and the states it held: its partitions are taken over
        again from their snapshots (by a live core) when their next batch comes."""
        self.stats["core_crashes"] += 1
        self.problem(f"core-{core.index}", f"core process {core.index} died (replaced; its "
                     "partitions restored from their snapshots)", self.rt.stall_after)
        lost = [tp for tp, p in self.owned.items() if p.core is core]
        for tp in lost:
            self.owned.pop(tp, None)
        log.error("a core process died; its partitions go back to their last snapshots",
                  extra={"core": core.index, "partitions": len(lost)})

    # -- batches ------------------------------------------------------------------------------
    async def apply(self, tp, name: str, offset: int, batch: PacketBatch | bytes | None,
                    handle):
        """Apply the batch at ``offset``: a PacketBatch, the broker's bytes (decoded by the
        core), or None (a message that was not a batch: it only moves the offset on)."""
        p = self.owned.get(tp)
        if p is None:
            if tp in self.fenced:
                self.stats["batches_not_owned"] += 1
                return None
            p = await self._take(tp, name)
        skip = offset in self.failed.get(tp, ())
        p.last_batch = time.monotonic()
        core = p.core
        if core.local:
            while True:
                reply = core.call(Apply(p.tid, offset, p.force, skip), batch)
                out = self._on_apply(tp, p, offset, handle, reply)
                if out is not Outcome.AGAIN:
                    break
            if out is Outcome.RESTORE:
                await self._retake(tp, name)
                return GAP
            return out
        await core.slots.acquire()

        def done(reply: Reply) -> None:
            core.slots.release()
            out = self._on_apply(tp, p, offset, handle, reply)
            if out is Outcome.RESTORE:
                asyncio.ensure_future(self._retake(tp, name))
        core.request(Apply(p.tid, offset, p.force, skip), batch, done)
        return None

    def _on_apply(self, tp, p: Partition, offset: int, handle, reply: Reply):
        if self.owned.get(tp) is not p:  # released meanwhile: its new owner has it
            return None
        t = type(reply)
        if t is Gap:
            if gap_verdict(p, offset, reply.expected, self.stats):
                p.force = True  # a real gap: apply the batch when it comes again
                if p.core.local:
                    return Outcome.AGAIN
            if self._seek is not None:
                asyncio.ensure_future(self._seek(tp, reply.expected))
            return GAP
        if t is Failed:
            self.stats["batches_failed"] += 1
            self.failed.setdefault(tp, set()).add(offset)
            log.error("a batch made the core raise: the partition goes back to its last "
                      "snapshot and skips that batch whole",
                      extra={"partition": p.name, "offset": offset, "error": reply.error})
            self.owned.pop(tp, None)  # unacked handles stay unacked: they are replayed
            self.stats.subtract(p.since_snapshot)  # ... and counted again then
            return Outcome.RESTORE
        if t is not Applied and t is not Skipped:  # Unowned: the core lost it
            self.owned.pop(tp, None)
            return None
        if handle is not None:
            p.pending.append(handle)
        if t is Skipped:
            self.stats["batches_replayed_skipped"] += 1
            return None
        p.gap_since = None
        p.force = False
        p.offset = offset
        p.dirty = True
        p.flows_held = reply.flows_held
        self._progress[tp] = time.monotonic()
        if offset in self.failed.get(tp, ()):
            self.stats["batches_failed_skipped"] += 1
        elif reply.undecodable:
            self.stats["batches_undecodable"] += 1
            log.warning("undecodable packet batch dropped",
                        extra={"partition": p.name, "offset": offset})
        else:
            p.batches += 1
            self.stats["batches"] += 1
            self.stats["packet_records"] += reply.records
            p.since_snapshot.update(batches=1, packet_records=reply.records)
        self._count(reply, p)
        if reply.encoded and self._publish is not None:
            self._publish(reply.encoded)
        return reply.results

    async def _retake(self, tp, name: str) -> None:
        """After a failed batch: restore the partition from its snapshot, and fetch again
        from there (the batch that failed is skipped when it comes)."""
        try:
            p = self.owned.get(tp) or await self._take(tp, name)
        except Exception as exc:
            self.problem(f"retake-{name}", f"partition {name} not restored: {exc!r}")
            log.error("partition could not be restored", extra={"partition": name,
                                                                 "error": repr(exc)})
            return
        if self._seek is not None:
            await self._seek(tp, p.offset + 1)

    def _count(self, reply: Applied, p: Partition) -> None:
        self.stats["flow_records"] += reply.flows
        self.stats["http_records"] += reply.http
        self.stats["alerts"] += reply.alerts
        self.stats["dns_records"] += reply.dns
        self.stats["tls_records"] += reply.tls
        self.stats["ssh_records"] += reply.ssh
        p.since_snapshot.update(flow_records=reply.flows, http_records=reply.http,
                                alerts=reply.alerts, dns_records=reply.dns,
                                tls_records=reply.tls, ssh_records=reply.ssh)
        if reply.detect_error:
            self.stats["detect_errors"] += 1

    def _on_results(self, tp, p: Partition, handle, reply: Reply) -> Results | None:
        """Results made without a batch (idle advance, end of input)."""
        if self.owned.get(tp) is not p or type(reply) is not Applied:
            if type(reply) is Failed:
                self.stats["batches_failed"] += 1
                self.owned.pop(tp, None)
            return None
        p.flows_held = reply.flows_held
        if handle is not None:
            p.pending.append(handle)
            p.dirty = True
        if reply.flows or reply.http or reply.dns or reply.tls or reply.ssh:
            p.dirty = True
        self._count(reply, p)
        if reply.encoded and self._publish is not None:
            self._publish(reply.encoded)
        return reply.results

    async def finish(self, tp, handle) -> Results | None:
        """End of ``tp``'s input (a Kinesis shard closed by resharding, read to its end):
        report its open flows. ``handle`` is acked with the next checkpoint."""
        p = self.owned.get(tp)
        if p is None:
            return None
        reply = await self._ask(p.core, Finish(p.tid))
        return self._on_results(tp, p, handle, reply)

    def advance_idle(self, tp) -> Results | None:
        """Wall-clock fallback for partitions nothing arrives on (see RuntimeConfig)."""
        p = self.owned.get(tp)
        if p is None or not self.rt.idle_advance:
            return None
        idle = time.monotonic() - p.last_batch
        if idle < self.rt.idle_advance or not p.flows_held:
            return None
        p.last_batch = time.monotonic()
        out: list = []
        p.core.request(Advance(p.tid, int(idle * NS)), None,
                       lambda r: out.append(self._on_results(tp, p, None, r)))
        return out[0] if out else None

    # -- checkpoints --------------------------------------------------------------------------
    def due(self, tp) -> bool:
        p = self.owned.get(tp)
        if p is None or not (p.pending or p.dirty):
            return False
        return (p.batches >= self.rt.checkpoint_batches
                or time.monotonic() - p.last_ckpt >= self.rt.checkpoint_interval)

    async def checkpoint(self, tp, flush: Callable[[], Awaitable[None]],
                         ack: Callable[[list], Awaitable[None]]) -> bool:
        """Snapshot ``tp``; True when stored (and its handles acked).

        Only taking the snapshot holds the partition: batches go on being applied while the
        results are flushed and the snapshot written. One checkpoint per partition at a time:
        a call while one is under way waits for it, then takes its own."""
        p = self.owned.get(tp)
        if p is None:
            return False
        while p.saving is not None:
            await asyncio.shield(p.saving)
        if self.owned.get(tp) is not p:
            return False
        p.saving = asyncio.get_running_loop().create_future()
        try:
            return await self._checkpoint(tp, p, flush, ack)
        finally:
            p.saving.set_result(None)
            p.saving = None

    async def _snapshot(self, p: Partition, full: bool) -> tuple[Snapshot | None, list]:
        """The partition's snapshot, and the handles of the batches it includes (those whose
        replies came before it: a core answers in order)."""
        fut = asyncio.get_running_loop().create_future()

        def done(reply: Reply) -> None:
            handles, p.pending = p.pending, []
            p.since_snapshot = Counter()  # the snapshot includes them
            fut.set_result((reply, handles))
        p.core.request(TakeSnapshot(p.tid, full), None, done)
        reply, handles = await fut
        if type(reply) is not SnapshotTaken:  # the core lost the partition
            return None, handles
        return Snapshot(reply.offset, reply.meta, reply.put, reply.delete), handles

    async def _checkpoint(self, tp, p: Partition, flush, ack) -> bool:
        p.batches = 0
        p.last_ckpt = time.monotonic()
        snap, handles = await self._snapshot(p, full=False)
        if snap is None:
            self.owned.pop(tp, None)
            return False
        if not handles and not p.dirty and not snap.put and not snap.delete:
            p.core.send(Saved(p.tid, True))
            return True
        p.dirty = False
        try:
            await flush()  # the results of these batches are in the broker first
        except Exception as exc:
            # Results the broker refused cannot be made again from this state: only a
            # restart from the last snapshot replays them.
            self.stats["publish_failed"] += 1
            p.core.send(Saved(p.tid, False))
            p.pending = handles + p.pending
            raise PublishFailed(f"partition {p.name}: results not delivered: {exc!r}") from exc
        try:
            try:
                await asyncio.to_thread(self.store.save, p.name, p.epoch, snap)
            except StateLost:
                # Redis came back empty: the rest of the state goes in now, not bit by bit.
                self.stats["state_rewrites"] += 1
                log.warning("store had lost the partition's state; writing all of it",
                            extra={"partition": p.name})
                p.core.send(Saved(p.tid, False))
                full, more = await self._snapshot(p, full=True)
                handles += more
                if full is None:
                    self.owned.pop(tp, None)
                    return False
                await flush()
                await asyncio.to_thread(self.store.save, p.name, p.epoch, full)
        except Fenced:
            self.stats["fenced"] += 1
            log.warning("partition taken over by another worker: dropping it",
                        extra={"partition": p.name})
            self.fenced.add(tp)
            self.release(tp)
            return False
        except Exception as exc:  # Redis down: keep the handles, retry later
            self.stats["checkpoint_errors"] += 1
            p.core.send(Saved(p.tid, False))
            p.pending = handles + p.pending
            p.dirty = True
            log.warning("checkpoint failed; will retry",
                        extra={"partition": p.name, "error": repr(exc)})
            return False
        p.core.send(Saved(p.tid, True))
        await ack(handles)
        self.stats["checkpoints"] += 1
        log.debug("checkpoint", extra={"partition": p.name, "offset": snap.offset,
                                       "handles": len(handles)})
        return True

    # -- health and metrics -------------------------------------------------------------------
    def flows_held(self) -> int:
        return sum(p.flows_held for p in self.owned.values())

    def applied(self, tp) -> int | None:
        """The last offset applied on ``tp`` (None: not owned)."""
        p = self.owned.get(tp)
        return None if p is None else p.offset

    def set_lag(self, tp, lag: int) -> None:
        self.lag[tp] = lag
        if lag <= 0:
            self._lag_since.pop(tp, None)
        else:
            self._lag_since.setdefault(tp, time.monotonic())

    def forget_lag(self, tp) -> None:
        self.lag.pop(tp, None)
        self._lag_since.pop(tp, None)

    def stalled(self) -> list:
        """Partitions with lag whose applied offset has not moved for ``stall_after``."""
        now = time.monotonic()
        out = []
        for tp, lag in list(self.lag.items()):
            if lag <= 0:
                continue
            since = max(self._progress.get(tp, 0.0), self._lag_since.get(tp, now))
            if now - since >= self.rt.stall_after:
                out.append(tp)
        return out

    def problem(self, key: str, text: str, for_seconds: float | None = None) -> None:
        """Report what makes this worker not ready: for ``for_seconds`` (a failure it has
        recovered from), or until it restarts (None)."""
        until = None if for_seconds is None else time.monotonic() + for_seconds
        self.problems[key] = (text, until)

    def health(self) -> tuple[bool, list[str]]:
        """(ready, problems): not ready while an agent or core crashed or a partition stalls."""
        now = time.monotonic()
        problems = [text for text, until in list(self.problems.values())
                    if until is None or now < until]
        problems += [f"partition {label(tp)} stalled: lag "
                     f"{self.lag.get(tp)}, nothing applied for {self.rt.stall_after:g} s"
                     for tp in self.stalled()]
        return not problems, problems


def label(tp) -> str:
    """A partition's label in metrics and messages: a Kafka TopicPartition's (or Kinesis
    ShardTP's) ``partition``, else the key itself."""
    p = getattr(tp, "partition", None)
    return str(tp if p is None or callable(p) else p)


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
