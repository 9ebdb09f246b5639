"""The Kinesis path of the stream app: shards of the collectors' stream, leased among the
workers through Redis, fed to the same Runtime (stream_app/runtime/runtime.py) and core as the Kafka
worker. One asyncio loop per worker; boto3 and redis-py calls run in threads.

Shards are leased among the workers through Redis: the protocol (keys, rounds, quotas,
hand-over, fencing) is in stream_app/adapters/kinesis_leases.py and docs/distributed.md.

Positions and offsets. A shard's position is the watermark of its partition state (the
Runtime's snapshot in Redis IS the Kinesis checkpoint; there is no other). A Kinesis record is
a KPL aggregate of PacketBatch user records (collectors/kpl.py), so a batch is identified by

    offset = int(SequenceNumber) << 16 | index of the user record in its aggregate

which increases along the shard (sequence numbers increase within a shard; the KPL format
and the 1 MiB record limit keep an aggregate well under 65536 user records, and a larger one
is refused). On take-over the worker reads the watermark W from the state's meta and starts at
AT_SEQUENCE_NUMBER(W >> 16) (TRIM_HORIZON when there is no state): the aggregate of W may be
only partly applied, and the Runtime skips every user record at or below W.

Resharding. ListShards returns open and closed shards (within the retention period). A shard
is consumable when it is not finished and each of its parents (ParentShardId,
AdjacentParentShardId) is finished or no longer listed; so after a split or a merge the
children wait until the parents are read to their end, which keeps a flow's packets in order.
A shard is finished when GetRecords returns no NextShardIterator (or, for endpoints that never
say so, such as moto, an empty read of a closed shard at or beyond its EndingSequenceNumber):
the worker then reports the flows still open in that shard's state (their later packets are in
a child shard, whose state is another partition's: they continue there as new records), takes a
last checkpoint and adds the shard to ``done``. Without resharding none of this happens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from collectors.kpl import deaggregate
from schemas.records import PacketBatch
from stream_app.core.processor import Results
from stream_app.runtime.runtime import GAP
from stream_app.state.partition import Meta
from stream_app.adapters.kinesis_leases import Leases, consumable, hand_back, share
from stream_app.state.store import keys as state_keys

log = logging.getLogger("mirrorscope.kinesis")

OFFSET_BITS = 16
MAX_USER_RECORDS = 1 << OFFSET_BITS
NS = 1_000_000_000
FAILED_SHARD_COOLDOWN = 30.0

THROTTLED = {"ProvisionedThroughputExceededException", "LimitExceededException",
             "ThrottlingException", "KMSThrottlingException", "RequestLimitExceeded"}


def offset_of(sequence_number: str | int, index: int) -> int:
    """The Runtime offset of user record ``index`` of the Kinesis record ``sequence_number``."""
    return int(sequence_number) << OFFSET_BITS | index


def position_of(offset: int) -> tuple[int, int]:
    """(sequence number, user record index) of an offset."""
    return offset >> OFFSET_BITS, offset & (MAX_USER_RECORDS - 1)


class ShardTP(NamedTuple):
    """The Runtime's partition key for a shard (``.partition`` like a Kafka TopicPartition)."""

    topic: str
    partition: str


class LeaseLost(Exception):
    pass


class _Restart(Exception):
    """Go back to the shard's last snapshot: results were lost on their way out, or a batch
    made the core raise (the runtime then skips that batch whole on the way)."""


# -- the consumer -----------------------------------------------------------------------------

@dataclass
class ConsumerConfig:
    stream: str
    app_name: str = "mirrorscope-kinesis"
    """Namespaces the leases and the partition states: workers with the same app name share
    the stream's shards; another app name reads the stream independently."""
    worker_id: str = ""
    lease_ms: int = 10_000
    shard_refresh: float = 30.0
    """Seconds between ListShards calls (sooner after a shard ends)."""
    poll_interval: float = 1.0
    """Seconds to wait after an empty GetRecords before the next."""
    read_interval: float = 0.2
    """Least seconds between two GetRecords of a shard (Kinesis allows 5 a second per shard,
    shared by every application reading it)."""
    max_records: int = 10_000
    backoff_max: float = 10.0
    log_interval: float = 30.0
    """Seconds between "progress" log lines (the counters)."""
    settle: float | None = None
    """Seconds after registering before taking leases, so that workers started together
    count each other first (default: one round, lease_ms / 3)."""

    def __post_init__(self):
        if not self.worker_id:
            self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    @property
    def round_s(self) -> float:
        return self.lease_ms / 3000.0


@dataclass
class _Shard:
    sid: str
    tp: ShardTP
    name: str
    deadline: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    releasing: bool = False
    flush_failed: bool = False
    behind_ms: int | None = None
    last_seq: int | None = None
    undecodable_logged: float = 0.0
    undecodable_since: int = 0


class KinesisConsumer:
    """``await run(stop_event)``; ``status()`` for /readyz; ``stats`` for the metrics."""

    def __init__(self, cfg: ConsumerConfig, runtime, outputs, redis_client, kinesis_client):
        self.cfg = cfg
        self.runtime = runtime
        self.outputs = outputs
        self.kinesis = kinesis_client
        self.redis = redis_client
        self.leases = Leases(redis_client, cfg.app_name, cfg.stream, cfg.worker_id, cfg.lease_ms)
        self.shards: dict[str, dict] = {}
        self.finished: set[str] = set()
        self.owned: dict[str, _Shard] = {}
        self.live: list[str] = []
        self.stats: Counter = Counter()
        self.ready = False
        self._next_refresh = 0.0
        self._registered = False
        self._settle_until = 0.0
        self._started = time.monotonic()
        self._decode = msgspec.msgpack.Decoder(PacketBatch).decode
        self._handovers: set[asyncio.Task] = set()
        self._refreshing: asyncio.Task | None = None
        self._cooldown: dict[str, float] = {}  # shard -> when it may be taken again

    # -- the lease loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        log.info("kinesis consumer starting", extra={
            "stream": cfg.stream, "app": cfg.app_name, "worker": cfg.worker_id,
            "lease_ms": cfg.lease_ms})
        self._settle_until = time.monotonic() + (cfg.round_s if cfg.settle is None
                                                 else cfg.settle)
        next_log = time.monotonic() + cfg.log_interval
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    await self._round()
                except Exception as exc:  # Redis or Kinesis unreachable: keep trying
                    self.stats["lease_round_errors"] += 1
                    log.warning("lease round failed", extra={"error": repr(exc)})
                    # Leases we could not renew stop their shards by their own deadline.
                if t0 >= next_log:
                    next_log = t0 + cfg.log_interval
                    self._log_progress()
                wait = max(0.05, cfg.round_s - (time.monotonic() - t0))
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        finally:
            await self.shutdown()

    async def _round(self) -> None:
        cfg = self.cfg
        missing, live, done = await asyncio.to_thread(self.leases.heartbeat)
        if missing and self._registered:
            # Our heartbeat was gone: Redis lost its data (or we stalled for a lease). Other
            # workers' lease keys may be gone too while they still work their shards: give
            # them a lease period to take their keys again before taking any free shard.
            self.stats["registry_lost"] += 1
            self._settle_until = time.monotonic() + cfg.lease_ms / 1000.0
            log.warning("this worker's heartbeat had vanished from the registry (Redis "
                        "restarted?): waiting a lease period before taking shards",
                        extra={"workers": len(live)})
        self._registered = True
        balance = time.monotonic() >= self._settle_until
        self.live = live
        self.finished = done
        # Renew what we hold; stop what we lost.
        held = [s for s in self.owned]
        if held:
            sent = time.monotonic()
            ok = await asyncio.to_thread(self.leases.renew, held)
            for sid, good in ok.items():
                h = self.owned.get(sid)
                if h is None:
                    continue
                if good:
                    h.deadline = sent + cfg.lease_ms / 1000.0 * 0.9
                    if good == 2:
                        # Nobody else held it meanwhile, else the key would name them; and
                        # if one did and let it go, its newer epoch fences our next write.
                        self.stats["leases_retaken"] += 1
                        log.warning("lease key had vanished (Redis restarted, or a late "
                                    "renewal): taken again", extra={"shard": sid})
                else:
                    self._lost(h, "lease taken by another worker")
        await self._reap()
        if time.monotonic() >= self._next_refresh and (
                self._refreshing is None or self._refreshing.done()):
            # ListShards in the background: a slow call must not hold up the renewals.
            self._refreshing = asyncio.create_task(self._refresh())
            if not self.shards:
                await self._refreshing
        self.ready = bool(self.shards) or self.ready
        if not balance or not self.shards:
            return
        eligible = self.consumable()
        quota = share(len(eligible), len(live))
        active = [s for s, h in self.owned.items() if not h.releasing]
        if len(active) > quota:
            for sid in hand_back(active, quota):
                self._hand_over(self.owned[sid], "rebalance")
        elif len(active) < quota:
            now = time.monotonic()
            free = [s for s in eligible
                    if s not in self.owned and self._cooldown.get(s, 0.0) <= now]
            holders = await asyncio.to_thread(self.leases.holders, free)
            free = [s for s in free if holders.get(s) is None]
            random.shuffle(free)
            for sid in free:
                if len(active) >= quota:
                    break
                sent = time.monotonic()
                if await asyncio.to_thread(self.leases.acquire, sid):
                    active.append(sid)
                    self._start(sid, sent)

    def consumable(self) -> list[str]:
        return consumable(self.shards, self.finished)

    async def _refresh(self) -> None:
        try:
            shards = await asyncio.to_thread(self._list_shards)
        except Exception as exc:
            self.stats["list_shards_errors"] += 1
            log.warning("ListShards failed", extra={"stream": self.cfg.stream,
                                                    "error": repr(exc)})
            self._next_refresh = time.monotonic() + min(5.0, self.cfg.shard_refresh)
            return
        before = set(self.shards)
        self.shards = {s["ShardId"]: s for s in shards}
        self._next_refresh = time.monotonic() + self.cfg.shard_refresh
        if set(self.shards) != before:
            closed = sorted(s for s, sh in self.shards.items()
                            if "EndingSequenceNumber" in sh.get("SequenceNumberRange", {}))
            log.info("shards listed", extra={"stream": self.cfg.stream,
                                             "shards": len(self.shards), "closed": closed})
        gone = {s for s in self.finished if s not in self.shards}
        if gone and self.shards:  # past retention: parents of nothing listed any more
            await asyncio.to_thread(self.leases.forget_finished, gone)

    def _list_shards(self) -> list[dict]:
        out: list[dict] = []
        kw: dict = {"StreamName": self.cfg.stream}
        while True:
            resp = self.kinesis.list_shards(**kw)
            out.extend(resp.get("Shards", []))
            tok = resp.get("NextToken")
            if not tok:
                return out
            kw = {"NextToken": tok}

    def _start(self, sid: str, sent: float) -> None:
        cfg = self.cfg
        tp = ShardTP(cfg.stream, sid)
        h = _Shard(sid, tp, f"{cfg.app_name}:{cfg.stream}:{sid}",
                   deadline=sent + cfg.lease_ms / 1000.0 * 0.9)
        self.owned[sid] = h
        self.runtime.assigned([tp])  # we hold the lease now: a partition fenced before is ours
        h.task = asyncio.create_task(self._shard_main(h), name=f"shard-{sid}")
        self.stats["leases_acquired"] += 1
        log.info("lease acquired", extra={"shard": sid, "workers": len(self.live),
                                          "owned": sorted(self.owned)})

    def _lost(self, h: _Shard, why: str) -> None:
        """Stop at once: the shard is someone else's (or nobody's) now."""
        if self.owned.get(h.sid) is not h:
            return
        self.owned.pop(h.sid, None)
        if h.task is not None and not h.task.done():
            h.task.cancel()
        self.runtime.release(h.tp)
        self.runtime.forget_lag(h.tp)
        self.outputs.forget(h.tp)
        self.stats["leases_lost"] += 1
        log.warning("lease lost: shard stopped", extra={"shard": h.sid, "reason": why})
        # If the key still names us (we stopped on our own deadline), free it now rather than
        # when it expires; if it names another worker, this does nothing.
        t = asyncio.create_task(asyncio.to_thread(self.leases.release, h.sid))
        self._handovers.add(t)
        t.add_done_callback(self._handovers.discard)

    def _hand_over(self, h: _Shard, why: str) -> None:
        """Stop reading, checkpoint, then delete the lease (in the background)."""
        if h.releasing:
            return
        h.releasing = True
        h.stop.set()

        async def go():
            try:
                if h.task is not None:
                    await asyncio.wait_for(asyncio.shield(h.task),
                                           timeout=self.cfg.lease_ms / 1000.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                if h.task is not None:
                    h.task.cancel()
            except Exception:
                pass
            await self._release(h, why)

        t = asyncio.create_task(go())
        self._handovers.add(t)
        t.add_done_callback(self._handovers.discard)

    async def _release(self, h: _Shard, why: str) -> None:
        if self.owned.get(h.sid) is h:
            self.owned.pop(h.sid, None)
        self.runtime.release(h.tp)
        self.runtime.forget_lag(h.tp)
        self.outputs.forget(h.tp)
        try:
            await asyncio.to_thread(self.leases.release, h.sid)
        except Exception as exc:  # it expires by itself
            log.info("lease release failed", extra={"shard": h.sid, "error": repr(exc)})
        self.stats["leases_released"] += 1
        log.info("lease released", extra={"shard": h.sid, "reason": why})

    async def _reap(self) -> None:
        for sid, h in list(self.owned.items()):
            t = h.task
            if t is None or not t.done() or h.releasing:
                continue
            if t.cancelled():
                outcome = "cancelled"
            elif t.exception() is not None:
                exc = t.exception()
                self.stats["shard_errors"] += 1
                log.error("shard consumer failed; not taken again for a while",
                          extra={"shard": sid, "error": repr(exc)}, exc_info=exc)
                outcome = "failed"
                self._cooldown[sid] = time.monotonic() + FAILED_SHARD_COOLDOWN
            else:
                outcome = t.result()
            if outcome == "lost":
                self._lost(h, "fenced or not renewed in time")
                continue
            if outcome == "finished":
                self.finished.add(sid)
                self._next_refresh = 0.0  # its children may be listed now
            await self._release(h, outcome)

    async def shutdown(self) -> None:
        """Checkpoint every shard, hand its lease back, leave the registry."""
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
        hs = list(self.owned.values())
        for h in hs:
            self._hand_over(h, "shutdown")
        if self._handovers:
            await asyncio.gather(*list(self._handovers), return_exceptions=True)
        try:
            await asyncio.to_thread(self.leases.deregister)
        except Exception as exc:
            log.info("deregister failed", extra={"error": repr(exc)})
        log.info("kinesis consumer stopped", extra={"stats": dict(self.stats)})

    # -- one shard ------------------------------------------------------------------------------
    async def _shard_main(self, h: _Shard) -> str:
        while True:
            try:
                return await self._consume(h)
            except _Restart as exc:
                self.stats["shard_restarts"] += 1
                log.warning("shard goes back to its last snapshot", extra={
                    "shard": h.sid, "reason": str(exc) or "results lost on their way out"})
                self.runtime.release(h.tp)
                self.outputs.forget(h.tp)
                h.flush_failed = False
                await asyncio.sleep(1.0)
            except LeaseLost as exc:
                log.warning("shard stopped", extra={"shard": h.sid, "reason": str(exc)})
                self.runtime.release(h.tp)
                self.outputs.forget(h.tp)
                return "lost"

    def _check_lease(self, h: _Shard) -> None:
        if time.monotonic() >= h.deadline:
            raise LeaseLost("lease not renewed in time")

    async def _watermark(self, name: str) -> int:
        meta = await asyncio.to_thread(self.redis.get, state_keys(name)[1])
        if meta is None:
            return -1
        return msgspec.msgpack.decode(meta, type=Meta).offset

    async def _iterator(self, h: _Shard, after: int | None, watermark: int) -> str:
        """A shard iterator: after sequence number ``after`` (the last record read in this
        session), else at the watermark's record, else the oldest record."""
        kw = {"StreamName": self.cfg.stream, "ShardId": h.sid}
        if after is not None:
            kw.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=str(after))
        elif watermark >= 0:
            kw.update(ShardIteratorType="AT_SEQUENCE_NUMBER",
                      StartingSequenceNumber=str(position_of(watermark)[0]))
        else:
            kw.update(ShardIteratorType="TRIM_HORIZON")
        try:
            resp = await asyncio.to_thread(self.kinesis.get_shard_iterator, **kw)
        except Exception as exc:
            if _code(exc) != "InvalidArgumentException" or kw["ShardIteratorType"] == "TRIM_HORIZON":
                raise
            # The record is past the retention period: the oldest one left is what there is.
            self.stats["position_expired"] += 1
            log.error("checkpointed position no longer in the stream: reading from the oldest "
                      "record (what lay between is lost)",
                      extra={"shard": h.sid, "watermark": watermark, "error": str(exc)})
            kw.pop("StartingSequenceNumber")
            kw["ShardIteratorType"] = "TRIM_HORIZON"
            resp = await asyncio.to_thread(self.kinesis.get_shard_iterator, **kw)
        return resp["ShardIterator"]

    async def _sleep(self, h: _Shard, seconds: float) -> None:
        try:
            await asyncio.wait_for(h.stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _consume(self, h: _Shard) -> str:
        cfg = self.cfg
        watermark = await self._watermark(h.name)
        h.last_seq = None
        it = await self._iterator(h, None, watermark)
        log.info("shard consumer started", extra={
            "shard": h.sid, "watermark": watermark,
            "start": "TRIM_HORIZON" if watermark < 0 else f"AT {position_of(watermark)[0]}"})
        backoff = 0.2
        last_read = 0.0
        while not h.stop.is_set():
            self._check_lease(h)
            wait = cfg.read_interval - (time.monotonic() - last_read)
            if wait > 0:
                await self._sleep(h, wait)
                if h.stop.is_set():
                    break
            last_read = time.monotonic()
            try:
                resp = await asyncio.to_thread(self.kinesis.get_records, ShardIterator=it,
                                               Limit=cfg.max_records)
            except Exception as exc:
                code = _code(exc)
                if code in THROTTLED:
                    self.stats["get_records_throttled"] += 1
                elif code == "ExpiredIteratorException":
                    self.stats["iterators_expired"] += 1
                    it = await self._iterator(h, h.last_seq, watermark)
                    continue
                else:
                    self.stats["get_records_errors"] += 1
                    log.warning("GetRecords failed; retrying", extra={
                        "shard": h.sid, "error": repr(exc), "backoff": round(backoff, 2)})
                    if code == "ResourceNotFoundException":
                        self._next_refresh = 0.0
                await self._sleep(h, backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, cfg.backoff_max)
                if code not in THROTTLED:
                    try:  # the iterator may be what is wrong
                        it = await self._iterator(h, h.last_seq, watermark)
                    except Exception:
                        pass
                continue
            backoff = 0.2
            records = resp.get("Records", [])
            h.behind_ms = resp.get("MillisBehindLatest")
            if h.behind_ms is not None:  # for the runtime's stall check and the lag gauge
                self.runtime.set_lag(h.tp, h.behind_ms)
            for rec in records:
                await self._record(h, rec)
            if records:
                self.stats["get_records_nonempty"] += 1
            nxt = resp.get("NextShardIterator")
            if nxt is None or (not records and self._read_to_end(h)):
                await self._finish_shard(h)
                return "finished"
            it = nxt
            if not records:
                res = self.runtime.advance_idle(h.tp)
                if res:
                    await self.outputs.publish(h.tp, res)
            if self.runtime.due(h.tp):
                await self._checkpoint(h)
            if not records:
                await self._sleep(h, cfg.poll_interval)
        # Asked to stop (rebalance, shutdown): the next owner starts from this checkpoint.
        await self._checkpoint(h, must=True)
        return "stopped"

    def _read_to_end(self, h: _Shard) -> bool:
        """A closed shard read to its EndingSequenceNumber (for endpoints that keep handing
        out iterators for closed shards, e.g. moto)."""
        rng = self.shards.get(h.sid, {}).get("SequenceNumberRange", {})
        end = rng.get("EndingSequenceNumber")
        if end is None:
            return False
        start = int(rng.get("StartingSequenceNumber", "0"))
        last = h.last_seq if h.last_seq is not None else -1
        return last >= int(end) or int(end) <= start

    async def _record(self, h: _Shard, rec: dict) -> None:
        st = self.stats
        seq = int(rec["SequenceNumber"])
        st["records_received"] += 1
        try:
            users = deaggregate(rec["Data"])
        except Exception as exc:
            self._undecodable(h, seq, None, exc)
            h.last_seq = seq
            return
        if len(users) > MAX_USER_RECORDS:
            self._undecodable(h, seq, MAX_USER_RECORDS,
                              ValueError(f"{len(users)} user records in one aggregate"),
                              len(users) - MAX_USER_RECORDS)
            users = users[:MAX_USER_RECORDS]
        for idx, user in enumerate(users):
            st["batches_received"] += 1
            try:
                batch = self._decode(user[2])
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError) as exc:
                self._undecodable(h, seq, idx, exc)
                continue
            self._check_lease(h)
            off = seq << OFFSET_BITS | idx
            res = await self.runtime.apply(h.tp, h.name, off, batch, off)
            if res is GAP:  # the core raised on a batch: back to the last snapshot
                raise _Restart("a batch made the core raise")
            if res is None or not isinstance(res, Results):
                st["batches_skipped"] += 1
                continue
            st["batches_applied"] += 1
            if res:
                await self.outputs.publish(h.tp, res)
        h.last_seq = seq

    def _undecodable(self, h: _Shard, seq: int, idx: int | None, exc: Exception,
                     n: int = 1) -> None:
        self.stats["undecodable"] += n
        h.undecodable_since += n
        now = time.monotonic()
        if now - h.undecodable_logged >= 10.0:
            log.warning("undecodable data dropped", extra={
                "shard": h.sid, "sequence_number": str(seq), "user_record": idx,
                "error": f"{type(exc).__name__}: {exc}", "since_last_log": h.undecodable_since})
            h.undecodable_logged = now
            h.undecodable_since = 0

    async def _checkpoint(self, h: _Shard, must: bool = False) -> None:
        rt = self.runtime
        tp = h.tp

        async def flush() -> None:
            try:
                await self.outputs.flush(tp)
            except Exception:
                h.flush_failed = True
                raise

        async def ack(_handles) -> None:  # the snapshot's watermark is the checkpoint
            return None

        delay = 0.2
        while tp in rt.owned:
            try:
                if await rt.checkpoint(tp, flush, ack):
                    return
            except Exception:
                if h.flush_failed:  # however the Runtime reports it
                    raise _Restart() from None
                raise
            if tp not in rt.owned:  # Fenced: another worker took the partition's state
                raise LeaseLost("fenced by another worker's take-over")
            if h.flush_failed:
                raise _Restart()
            if not must:
                return  # the store is down: the Runtime keeps the batches for the next try
            self._check_lease(h)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _finish_shard(self, h: _Shard) -> None:
        """The shard is closed and read: report its open flows (they go on in a child
        shard), checkpoint, and mark it finished."""
        res = await self.runtime.finish(h.tp, ("end", h.sid))
        if res is not None:
            if res:
                await self.outputs.publish(h.tp, res)
            await self._checkpoint(h, must=True)
        await asyncio.to_thread(self.leases.mark_finished, h.sid)
        self.stats["shards_finished"] += 1
        log.info("shard finished (closed by resharding and read to its end)", extra={
            "shard": h.sid, "flows_ended": len(res.flows) if res else 0})

    def _log_progress(self) -> None:
        st, rs = self.stats, self.runtime.stats
        log.info("progress", extra={
            "owned": sorted(self.owned), "workers": len(self.live),
            "records_received": st["records_received"], "batches_received": st["batches_received"],
            "batches_applied": st["batches_applied"], "batches_skipped": st["batches_skipped"],
            "undecodable": st["undecodable"], "packet_records": rs["packet_records"],
            "flow_records": rs["flow_records"], "http_records": rs["http_records"],
            "dns_records": rs["dns_records"], "tls_records": rs["tls_records"],
            "ssh_records": rs["ssh_records"],
            "checkpoints": rs["checkpoints"],
            "millis_behind": {s: h.behind_ms for s, h in self.owned.items()}})

    # -- status ---------------------------------------------------------------------------------
    def status(self) -> dict:
        rt = self.runtime
        stats = dict(rt.stats)
        stats.update(self.stats)
        healthy, problems = rt.health()
        return {
            "ready": self.ready and healthy,
            "problems": problems,
            "worker": self.cfg.worker_id,
            "stream": self.cfg.stream,
            "app": self.cfg.app_name,
            "live_workers": len(self.live),
            "shards": sorted(self.shards),
            "consumable": self.consumable() if self.shards else [],
            "finished": sorted(self.finished),
            "assigned": sorted(s for s, h in self.owned.items() if not h.releasing),
            "loaded": sorted(tp.partition for tp in rt.owned),
            "millis_behind": {s: h.behind_ms for s, h in self.owned.items()},
            "uptime": round(time.monotonic() - self._started, 1),
            "stats": stats,
        }


def _code(exc: BaseException) -> str | None:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        return resp.get("Error", {}).get("Code")
    return None


def make_kinesis_client(region: str | None = None, endpoint_url: str | None = None,
                        pool: int = 64):
    import boto3
    from botocore.config import Config
    return boto3.client(
        "kinesis", region_name=region or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION"), endpoint_url=endpoint_url,
        # Retries are ours (backoff per shard, counted and logged).
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5,
                      read_timeout=20, max_pool_connections=pool))
