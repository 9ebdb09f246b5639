"""Where partition states live and the core runs on them: one implementation of the core's
side of the runtime's protocol (``CoreServer``, messages in runtime/messages.py), used either
in this process (``LocalCore``: a call) or in a subprocess (runtime/processes.py,
``CoreProcess``: the same server at the other end of a pipe, so that one worker uses more than
one CPU; the GIL keeps a single process on one).

A core answers in the order it was asked, so per partition the order of batches, snapshots
and releases is the order they were sent in; a snapshot answers after every batch sent
before it. Over a pipe, messages are msgpack (the batch travels as the broker's bytes,
decoded in the subprocess), and results come back encoded and grouped by result partition,
so the consuming process only appends them to its producer batches.

The core must not raise (stream_app/core's own contract); if it does on a batch, the server
drops that partition's state, which the batch may have half changed, and answers ``Failed``:
the runtime then restores the partition from its last snapshot and skips the batch whole.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable

import msgspec

from schemas.kinds import ID_GETTERS
from schemas.records import PacketBatch
from stream_app.core.processor import CoreConfig, Results
from stream_app.runtime.messages import (
    Advance, Applied, Apply, Failed, Finish, Gap, Layout, Release, Reply, Request, Restore,
    RestoreFailed, Restored, Saved, SnapshotTaken, Skipped, TakeSnapshot, Unowned,
)
from stream_app.state.codec import Codec, StateError
from stream_app.state.partition import PartitionState, Snapshot

log = logging.getLogger("mirrorscope.worker")
NS = 1_000_000_000
MAX_IN_FLIGHT = 32  # batches sent to one core process and not answered yet
NO_REPLY = (Saved, Release, Layout)


class CoreServer:
    """Partition states by the runtime's partition id (``tid``), and what to do with them."""

    def __init__(self, codec: Codec, core: CoreConfig, detectors=None, contiguous: bool = True,
                 encode: bool = False):
        self.codec = codec
        self.core = core
        self.detectors = detectors
        self.contiguous = contiguous
        self.encode = encode
        """True in a subprocess: results go back encoded (Applied.encoded), not as objects."""
        self.states: dict[int, PartitionState] = {}
        self.marks: dict[int, Snapshot] = {}
        self.parts: dict[str, int] = {}
        self._decode = msgspec.msgpack.Decoder(PacketBatch).decode

    def handle(self, msg: Request, batch=None) -> Reply | None:
        """``batch``: with Apply, the broker's bytes, or (in process) a PacketBatch or None."""
        t = type(msg)
        if t is Apply:
            return self._apply(msg, batch)
        if t is Advance or t is Finish:
            st = self.states.get(msg.tid)
            if st is None:
                return Unowned()
            try:
                res = st.tick(st.proc.flows.now_ns + msg.ns) if t is Advance else st.proc.finish()
            except Exception as exc:
                return self._failed(msg.tid, exc)
            return self._applied(st, res, 0, False)
        if t is TakeSnapshot:
            st = self.states.get(msg.tid)
            if st is None:
                return Unowned()
            snap = self.marks[msg.tid] = st.snapshot(full=msg.full)
            return SnapshotTaken(snap.offset, snap.meta, snap.put, snap.delete)
        if t is Saved:
            snap = self.marks.pop(msg.tid, None)
            st = self.states.get(msg.tid)
            if msg.ok and snap is not None and st is not None:
                st.saved_ok(snap)
            return None
        if t is Restore:
            try:
                st = PartitionState.restore(msg.name, self.core, self.codec, msg.meta, msg.blobs)
            except StateError as exc:
                return RestoreFailed(str(exc))
            self.states[msg.tid] = st
            self.marks.pop(msg.tid, None)
            return Restored(st.offset)
        if t is Release:
            self.states.pop(msg.tid, None)
            self.marks.pop(msg.tid, None)
            return None
        if t is Layout:
            self.parts = dict(msg.partitions)
            return None
        raise TypeError(f"not a core request: {msg!r}")

    def _apply(self, msg: Apply, batch) -> Reply:
        st = self.states.get(msg.tid)
        if st is None:
            return Unowned()
        if self.contiguous and not msg.force and st.offset >= 0 and msg.offset > st.offset + 1:
            return Gap(st.offset + 1)
        if isinstance(batch, (bytes, bytearray, memoryview)):
            try:
                batch = self._decode(batch)
            except (msgspec.DecodeError, TypeError):
                batch = None
        try:
            res = st.apply(msg.offset, None if msg.skip else batch)
        except Exception as exc:
            return self._failed(msg.tid, exc)
        if res is None:
            return Skipped()
        n = len(batch.records) if batch is not None and not msg.skip else 0
        return self._applied(st, res, n, batch is None and not msg.skip)

    def _failed(self, tid: int, exc: BaseException) -> Failed:
        # The state may hold part of the batch: it must not be snapshotted nor go on.
        self.states.pop(tid, None)
        self.marks.pop(tid, None)
        log.error("the core raised on a batch: partition state dropped",
                  extra={"error": f"{type(exc).__name__}: {exc}"}, exc_info=exc)
        return Failed(f"{type(exc).__name__}: {str(exc)[:500]}")

    def _applied(self, st: PartitionState, res: Results, n: int, undecodable: bool) -> Applied:
        detect_error = not detect_into(self.detectors, res, st)
        return Applied(n, undecodable, len(res.flows), len(res.http), len(res.alerts),
                       detect_error, st.flows_held,
                       encoded=grouped(res, self.parts) if self.encode else None,
                       results=None if self.encode else res,
                       dns=len(res.dns), tls=len(res.tls), ssh=len(res.ssh))


def detect_into(detectors, res: Results, st: PartitionState) -> bool:
    """Run the detectors over ``res`` (setting its alerts); False when their state store
    failed, in which case the records still go, without alerts."""
    if detectors is None or not (res.flows or res.http or res.dns or res.tls or res.ssh):
        return True
    try:
        res.alerts = detectors.observe(res.flows, res.http, st.proc.flows.now_ns / NS,
                                       dns=res.dns, tls=res.tls, ssh=res.ssh)
        return True
    except Exception as exc:
        log.warning("detectors skipped a batch", extra={"error": repr(exc)})
        return False


def encode_results(res: Results) -> list[tuple[str, bytes, bytes]]:
    """(kind, key, value) per record: key = the record's deterministic id, so a replay's
    duplicates can be dropped downstream."""
    enc = msgspec.msgpack.encode
    out = []
    for name, id_of in ID_GETTERS:
        recs = getattr(res, name)
        if recs:
            out += [(name, id_of(r).encode(), enc(r)) for r in recs]
    return out


def grouped(res: Results, parts: dict[str, int]) -> dict:
    """The results encoded and grouped by (kind, result partition): {(kind, p): [(key, value)]}.
    The partition is a CRC of the key (the ids are hashes already: a CRC spreads them as
    evenly as murmur2, at a fraction of a pure-Python murmur2's cost)."""
    out: dict = {}
    crc = zlib.crc32
    for kind, key, value in encode_results(res):
        g = (kind, crc(key) % parts[kind])
        lst = out.get(g)
        if lst is None:
            lst = out[g] = []
        lst.append((key, value))
    return out


# -- in process ---------------------------------------------------------------------------------

class LocalCore:
    """The server in this process: a request is a call, answered before it returns."""

    local = True
    index = 0
    alive = True

    def __init__(self, server: CoreServer):
        self.server = server

    def call(self, msg: Request, batch=None) -> Reply | None:
        return self.server.handle(msg, batch)

    def request(self, msg: Request, batch, done: Callable[[Reply], None] | None) -> None:
        reply = self.server.handle(msg, batch)
        if reply is not None and done is not None:
            done(reply)

    def send(self, msg: Request) -> None:
        self.server.handle(msg)
