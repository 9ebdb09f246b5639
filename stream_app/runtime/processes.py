"""`mirrorscope worker --processes N`: the core in N subprocesses, so that one worker uses more
than one CPU (the GIL keeps a single process on one).

The Faust process consumes, owns the partitions and their Redis state, and publishes; each
subprocess holds the PartitionStates of the partitions hashed to it, decodes and applies their
batches, runs the detectors, and returns encoded results. Messages go over a pipe in order,
and replies come back in the same order, so per partition the order of batches, snapshots and
releases is the order they were sent in:

    main -> core   ("restore", tid, name, meta, blobs)   <- ("ok", offset)
                   ("apply", tid, offset, force) + raw   <- ("res", ...) | ("skip",) | ("gap", expected)
                   ("idle", tid, ns)                     <- ("res", ...)
                   ("snapshot", tid, full)               <- ("snap", offset, meta, put, delete)
                   ("saved", tid, ok)                    (no reply)
                   ("release", tid)                      (no reply)
                   ("parts", -1, {kind: partitions})     (no reply; the result topics' layout)

A snapshot answers after every batch sent before it, so the handles of the batches whose
replies came before it are exactly those it includes: they are acked once it is stored.
The checkpoint protocol is the one of stream_app/runtime/runtime.py (flush results, store the snapshot
with the offset, then ack); only where the state lives differs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import os
import queue
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from schemas.records import PacketBatch
from stream_app.core.processor import CoreConfig
from stream_app.state.partition import Codec, PartitionState, Snapshot, StateError
from stream_app.state.store import Fenced, StateLost
from stream_app.runtime.runtime import (
    NS,
    PublishFailed,
    RuntimeConfig,
    claim_and_load,
    detect_into,
    encode_results,
    gap_verdict,
)

log = logging.getLogger("mirrorscope.worker")
MAX_IN_FLIGHT = 32  # batches sent to one core process and not answered yet


# -- the core process --------------------------------------------------------------------------
def serve(conn, key: bytes, core: CoreConfig, detect, redis_cfg, detect_prefix: str,
          contiguous: bool) -> None:
    """The subprocess' loop (see the module docstring for the messages)."""
    codec = Codec(key)
    states: dict[int, PartitionState] = {}
    marks: dict[int, object] = {}
    detectors = None
    if detect is not None:
        from stream_app.core.detectors import Detectors
        from stream_app.state.detectors import RedisDetectorState
        from stream_app.state.store import connect
        detectors = Detectors(detect, state=RedisDetectorState(connect(redis_cfg),
                                                               prefix=detect_prefix))
    decode = msgspec.msgpack.Decoder(PacketBatch).decode
    parts: dict[str, int] = {}
    send = conn.send
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        op, tid = msg[0], msg[1]
        if op == "apply":
            _, _, offset, force = msg
            raw = conn.recv_bytes()  # the batch's bytes as they came from Kafka, unpickled
            st = states[tid]
            if contiguous and not force and st.offset >= 0 and offset > st.offset + 1:
                send(("gap", st.offset + 1))
                continue
            try:
                batch = decode(raw)
            except (msgspec.DecodeError, TypeError):
                batch = None
            res = st.apply(offset, batch)
            if res is None:
                send(("skip",))
                continue
            n = len(batch.records) if batch is not None else 0
            alerts_err = not detect_into(detectors, res, st)
            send(("res", n, batch is None, len(res.flows), len(res.http), len(res.alerts),
                  alerts_err, st.flows_held, _grouped(res, parts)))
        elif op == "idle":
            st = states[tid]
            res = st.tick(st.proc.flows.now_ns + msg[2])
            alerts_err = not detect_into(detectors, res, st)
            send(("res", 0, False, len(res.flows), len(res.http), len(res.alerts), alerts_err,
                  st.flows_held, _grouped(res, parts)))
        elif op == "parts":
            parts = msg[2]
        elif op == "restore":
            _, _, name, meta, blobs = msg
            try:
                st = states[tid] = PartitionState.restore(name, core, codec, meta, blobs)
                send(("ok", st.offset))
            except StateError as exc:
                send(("error", str(exc)))
        elif op == "snapshot":
            st = states[tid]
            snap = st.snapshot(full=msg[2])
            marks[tid] = snap
            send(("snap", snap.offset, snap.meta, snap.put, snap.delete))
        elif op == "saved":
            snap = marks.pop(tid, None)
            if msg[2] and snap is not None and tid in states:
                states[tid].saved_ok(snap)
        elif op == "release":
            states.pop(tid, None)
            marks.pop(tid, None)


def _grouped(res, parts: dict[str, int]) -> dict:
    """The results encoded and grouped by (kind, result partition): the Faust process only
    appends them to its producer batches."""
    out: dict = {}
    crc = zlib.crc32
    for kind, key, value in encode_results(res):
        g = (kind, crc(key) % parts[kind])
        lst = out.get(g)
        if lst is None:
            lst = out[g] = []
        lst.append((key, value))
    return out


# -- the Faust process' side ---------------------------------------------------------------------
@dataclass
class ROwned:
    name: str
    epoch: int
    tid: int
    child: "Child"
    offset: int = -1
    pending: list = field(default_factory=list)
    batches: int = 0
    dirty: bool = False
    flows_held: int = 0
    last_ckpt: float = field(default_factory=time.monotonic)
    last_batch: float = field(default_factory=time.monotonic)
    saving: asyncio.Future | None = None
    gap_since: float | None = None
    force: bool = False


class Child:
    def __init__(self, index: int, ctx, args):
        self.index = index
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=serve, args=(child_conn, *args), daemon=True,
                                name=f"mirrorscope-core-{index}")
        self.proc.start()
        child_conn.close()
        self.fifo: collections.deque = collections.deque()
        self.slots: asyncio.Semaphore | None = None
        # Writes go through a thread: a blocking write of a large batch while the core process
        # is blocked writing its reply (which only the event loop reads) would deadlock.
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._writer, name=f"core-{index}-writer", daemon=True).start()

    def _writer(self) -> None:
        while True:
            msg, raw = self._out.get()
            try:
                self.conn.send(msg)
                if raw is not None:
                    self.conn.send_bytes(raw)
            except (OSError, ValueError):
                return  # the reader sees the process gone and exits the worker

    def send(self, msg, entry, raw: bytes | None = None) -> None:
        if entry is not None:
            self.fifo.append(entry)
        self._out.put((msg, raw))


class RemoteRuntime:
    """What stream_app.runtime.runtime.Runtime offers the Faust app, with the states in core processes.
    ``apply`` returns as soon as the batch is sent; results are published as replies come."""

    remote = True

    def __init__(self, store, key: bytes, core: CoreConfig, processes: int,
                 rt: RuntimeConfig | None = None, detect=None, redis_cfg=None,
                 detect_prefix: str = "md"):
        self.store = store
        self.rt = rt or RuntimeConfig()
        core = CoreConfig(flows=core.flows, l7=core.l7, detect=None)
        ctx = multiprocessing.get_context("spawn")
        args = (key, core, detect, redis_cfg, detect_prefix, self.rt.contiguous_offsets)
        self.children = [Child(i, ctx, args) for i in range(processes)]
        self.owned: dict[object, ROwned] = {}
        self.stats: Counter = Counter()
        self.lag: dict[object, int] = {}
        self.fenced: set = set()
        self.detectors = None
        self._tids: dict[object, int] = {}
        self._publish = None
        self._seek = None

    def bind(self, publish_grouped, seek, partitions: dict[str, int]) -> None:
        """``publish_grouped({(kind, partition): [(key, value)]})``; ``seek(tp, offset)``, a
        coroutine; ``partitions``: the result topics' partition counts, by kind."""
        self._publish = publish_grouped
        self._seek = seek
        for c in self.children:
            c.send(("parts", -1, dict(partitions)), None)
        loop = asyncio.get_running_loop()
        for c in self.children:
            c.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
            loop.add_reader(c.conn.fileno(), self._on_readable, c)

    # -- replies ------------------------------------------------------------------------------
    def _on_readable(self, c: Child) -> None:
        while c.conn.poll():
            try:
                reply = c.conn.recv()
            except (EOFError, OSError):
                log.critical("a core process died; exiting so the worker restarts from its "
                             "last snapshots", extra={"core": c.index})
                os._exit(70)
            self._on_reply(c, c.fifo.popleft(), reply)

    def _on_reply(self, c: Child, entry, reply) -> None:
        kind = entry[0]
        if kind == "req":
            fut = entry[1]
            if reply[0] == "snap":  # the handles answered before it are what it includes
                o = entry[2]
                handles, o.pending = o.pending, []
                fut.set_result((reply, handles))
            elif not fut.done():
                fut.set_result(reply)
            return
        _, tp, offset, handle = entry
        if handle is not None:
            c.slots.release()
        o = self.owned.get(tp)
        what = reply[0]
        if what == "gap":
            if o is not None:
                self._gap(tp, o, offset, reply[1])
            return
        if o is None:  # released meanwhile: its new owner has it
            return
        if handle is not None:
            o.pending.append(handle)
        if what == "skip":
            self.stats["batches_replayed_skipped"] += 1
            return
        _, n, undecodable, nf, nh, na, detect_err, held, encoded = reply
        o.gap_since = None
        o.force = False
        o.flows_held = held
        if handle is not None:
            o.offset = offset
            o.dirty = True
            if undecodable:
                self.stats["batches_undecodable"] += 1
                log.warning("undecodable packet batch dropped",
                            extra={"partition": o.name, "offset": offset})
            else:
                o.batches += 1
                self.stats["batches"] += 1
                self.stats["packet_records"] += n
        elif nf or nh:
            o.dirty = True
        if detect_err:
            self.stats["detect_errors"] += 1
        self.stats["flow_records"] += nf
        self.stats["http_records"] += nh
        self.stats["alerts"] += na
        if encoded:
            self._publish(encoded)

    def _gap(self, tp, o: ROwned, offset: int, expected: int) -> None:
        if gap_verdict(o, offset, expected, self.stats):
            o.force = True  # a real gap: the core process applies the batch when it is sent again
        asyncio.ensure_future(self._seek(tp, expected))

    async def _request(self, c: Child, msg, o: ROwned | None = None):
        fut = asyncio.get_running_loop().create_future()
        c.send(msg, ("req", fut, o))
        return await fut

    # -- ownership ----------------------------------------------------------------------------
    def _tid(self, tp) -> int:
        t = self._tids.get(tp)
        if t is None:
            t = self._tids[tp] = len(self._tids)
        return t

    async def _take(self, tp, name: str) -> ROwned:
        t0 = time.monotonic()
        epoch, meta, blobs = await claim_and_load(self.store, name, self.stats)
        tid = self._tid(tp)
        # The core process holding the fewest partitions: an even share for each.
        held = Counter(o.child.index for o in self.owned.values())
        c = min(self.children, key=lambda ch: (held[ch.index], ch.index))
        reply = await self._request(c, ("restore", tid, name, meta, blobs))
        if reply[0] != "ok":
            self.stats["state_unreadable"] += 1
            raise RuntimeError(f"partition {name}: {reply[1]}")
        o = self.owned[tp] = ROwned(name, epoch, tid, c, offset=reply[1])
        self.stats["partitions_loaded"] += 1
        self.stats["flows_restored"] += len(blobs)
        log.info("partition taken over", extra={"partition": name, "epoch": epoch,
                                                "watermark": reply[1], "flows": len(blobs),
                                                "core": c.index,
                                                "seconds": round(time.monotonic() - t0, 3)})
        return o

    def expected(self, tp) -> int:
        return self.owned[tp].offset + 1

    def release(self, tp) -> None:
        o = self.owned.pop(tp, None)
        if o is not None:
            o.child.send(("release", o.tid), None)

    def assigned(self, tps) -> None:
        self.fenced -= set(tps)

    # -- batches ------------------------------------------------------------------------------
    async def apply(self, tp, name: str, offset: int, raw: bytes, handle):
        """Send the batch (the message's bytes, decoded in the core process); None."""
        o = self.owned.get(tp)
        if o is None:
            if tp in self.fenced:
                self.stats["batches_not_owned"] += 1
                return None
            o = await self._take(tp, name)
        c = o.child
        await c.slots.acquire()
        c.send(("apply", o.tid, offset, o.force), ("apply", tp, offset, handle), raw)
        o.last_batch = time.monotonic()
        return None

    def due(self, tp) -> bool:
        o = self.owned.get(tp)
        if o is None or not (o.pending or o.dirty):
            return False
        return (o.batches >= self.rt.checkpoint_batches
                or time.monotonic() - o.last_ckpt >= self.rt.checkpoint_interval)

    async def checkpoint(self, tp, flush, ack) -> bool:
        o = self.owned.get(tp)
        if o is None:
            return False
        while o.saving is not None:
            await asyncio.shield(o.saving)
        if self.owned.get(tp) is not o:
            return False
        o.saving = asyncio.get_running_loop().create_future()
        try:
            return await self._checkpoint(tp, o, flush, ack)
        finally:
            o.saving.set_result(None)
            o.saving = None

    async def _checkpoint(self, tp, o: ROwned, flush, ack) -> bool:
        o.batches = 0
        o.last_ckpt = time.monotonic()
        reply, handles = await self._request(o.child, ("snapshot", o.tid, False), o)
        if not handles and not o.dirty and reply[1] <= o.offset and not reply[3] \
                and not reply[4]:
            o.child.send(("saved", o.tid, True), None)
            return True
        o.dirty = False
        try:
            await flush()
        except Exception as exc:
            self.stats["publish_failed"] += 1
            o.pending = handles + o.pending
            raise PublishFailed(f"partition {o.name}: results not delivered: {exc!r}") from exc
        snap = Snapshot(reply[1], reply[2], reply[3], reply[4])
        try:
            try:
                await asyncio.to_thread(self.store.save, o.name, o.epoch, snap)
            except StateLost:
                self.stats["state_rewrites"] += 1
                log.warning("store had lost the partition's state; writing all of it",
                            extra={"partition": o.name})
                o.child.send(("saved", o.tid, False), None)
                full, more = await self._request(o.child, ("snapshot", o.tid, True), o)
                handles += more
                await flush()
                await asyncio.to_thread(self.store.save, o.name, o.epoch,
                                        Snapshot(full[1], full[2], full[3], full[4]))
        except Fenced:
            self.stats["fenced"] += 1
            log.warning("partition taken over by another worker: dropping it",
                        extra={"partition": o.name})
            self.fenced.add(tp)
            self.release(tp)
            return False
        except Exception as exc:
            self.stats["checkpoint_errors"] += 1
            o.child.send(("saved", o.tid, False), None)
            o.pending = handles + o.pending
            o.dirty = True
            log.warning("checkpoint failed; will retry",
                        extra={"partition": o.name, "error": repr(exc)})
            return False
        o.child.send(("saved", o.tid, True), None)
        await ack(handles)
        self.stats["checkpoints"] += 1
        return True

    def advance_idle(self, tp):
        o = self.owned.get(tp)
        if o is None or not self.rt.idle_advance:
            return None
        idle = time.monotonic() - o.last_batch
        if idle < self.rt.idle_advance or not o.flows_held:
            return None
        o.last_batch = time.monotonic()
        o.child.send(("idle", o.tid, int(idle * NS)), ("apply", tp, -1, None))
        return None

    def flows_held(self) -> int:
        return sum(o.flows_held for o in self.owned.values())

    def close(self) -> None:
        """Stop the core processes (a deliberate end, not a crash)."""
        loop = asyncio.get_running_loop()
        for c in self.children:
            loop.remove_reader(c.conn.fileno())
            c.conn.close()
            c.proc.terminate()
        for c in self.children:
            c.proc.join(10)
