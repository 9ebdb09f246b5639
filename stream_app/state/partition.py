"""One partition's share of the core, made durable: its flows can be written back to a store
as they change, tied to the offset of the last packet batch applied, and restored elsewhere.

No I/O here. A worker (Kafka) or a shard consumer (Kinesis) owns a ``PartitionState`` per
partition it is assigned, applies batches in offset order, and now and then takes a
``Snapshot``: the flows changed since the last one, the keys of flows that ended, and the
offset they reflect. The store writes the snapshot in one transaction; only then may the
adapter commit the offset to the broker. After a crash the new owner restores the last
snapshot and skips every batch at or below its offset, so a packet is counted exactly once
(results made after the snapshot are made again, with the same ids). Flows are encoded by
stream_app/state/codec.py; the Meta's ``version`` says in which of its formats.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec

from schemas.records import PacketBatch
from stream_app.core.processor import EXPIRE_EVERY, CoreConfig, Processor, Results
from stream_app.state.codec import READS, VERSION, Codec, StateError

STATE_VERSION = VERSION
"""The state format written: the Meta's version, and that of every flow blob beside it."""


class Meta(msgspec.Struct):
    """What a partition's state says beside its flows."""

    version: int
    offset: int
    """The last batch offset (Kafka) or sequence number (Kinesis) the state includes; -1: none."""
    now_ns: int
    packets: int
    stats: dict[str, int] = {}


@dataclass
class Snapshot:
    offset: int
    meta: bytes
    put: dict[bytes, bytes]
    """Flow field -> signed blob, for flows new or changed since the last snapshot."""
    delete: list[bytes]
    """Fields of flows written before that have ended since."""
    _marks: dict = field(default_factory=dict, repr=False)


def _field(key: tuple) -> bytes:
    return msgspec.msgpack.encode(key)


def _mark(f) -> tuple:
    # Every packet moves a counter, and an expiry split zeroes them: any change to a flow's
    # state changes this tuple. The object itself is part of it: a flow that ended and
    # started again under the same key is a new object.
    return (f, f.first_ns, f.orig_pkts, f.resp_pkts, f.closing_ns, f.idle_ns)


class PartitionState:
    """A Processor for one partition plus what is needed to make it durable."""

    def __init__(self, name: str, config: CoreConfig, codec: Codec):
        self.name = name
        self.codec = codec
        self.proc = Processor(config)
        self.offset = -1
        """The last offset applied (in memory; ``saved`` is the last one stored)."""
        self.saved = -1
        self.skipped = 0
        self.batches = 0
        self._written: dict[bytes, tuple] = {}  # field -> mark as last written

    # -- processing -------------------------------------------------------------------------
    def apply(self, offset: int, batch: PacketBatch | None) -> Results | None:
        """Apply the batch at ``offset``; None when the state already includes it (a replay).
        ``batch`` None: the message at ``offset`` was not a batch (dropped and counted by the
        caller); the state moves past it all the same."""
        if offset <= self.offset:
            self.skipped += 1
            return None
        if batch is None:
            self.offset = offset
            return Results()
        res = self.proc.process(batch.records)
        self.batches += 1
        if self.batches % EXPIRE_EVERY == 0:  # the sweep embedded mode runs as often
            more = self.proc.tick()
            res.flows += more.flows
            res.http += more.http
            res.alerts += more.alerts
            res.dns += more.dns  # records the flows ended by the sweep made
            res.tls += more.tls
            res.ssh += more.ssh
        if batch.end_ns:
            # A replayed capture ended: report every flow as embedded mode does at the end of
            # the file, with the capture's last time rather than this partition's.
            end = self.proc.finish(batch.end_ns)
            res.flows += end.flows
            res.http += end.http
            res.alerts += end.alerts
            res.dns += end.dns  # e.g. the queries left unanswered at the end
            res.tls += end.tls
            res.ssh += end.ssh
        self.offset = offset
        return res

    def tick(self, now_ns: int | None = None) -> Results:
        return self.proc.tick(now_ns)

    @property
    def flows_held(self) -> int:
        return len(self.proc.flows.flows)

    # -- durability -------------------------------------------------------------------------
    def snapshot(self, full: bool = False) -> Snapshot:
        """The flows changed since the last stored snapshot; ``full``: every flow (the store
        lost what it had)."""
        if full:
            self._written.clear()
        put: dict[bytes, bytes] = {}
        marks: dict[bytes, tuple] = {}
        written = self._written
        proc = self.proc
        dumps = self.codec.encoder(proc)
        live = set()
        for key, f in proc.flows.flows.items():
            fld = _field(key)
            live.add(fld)
            m = _mark(f)
            old = written.get(fld)
            if old is None or old[0] is not f or old[1:] != m[1:]:
                put[fld] = dumps(f)
                marks[fld] = m
        delete = [fld for fld in written if fld not in live]
        t = proc.flows
        meta = msgspec.msgpack.encode(Meta(STATE_VERSION, self.offset, t.now_ns, proc.packets,
                                           dict(t.stats)))
        return Snapshot(self.offset, meta, put, delete, marks)

    def saved_ok(self, snap: Snapshot) -> None:
        """The store holds ``snap``: later snapshots need only what changes after it."""
        for fld in snap.delete:
            self._written.pop(fld, None)
        self._written.update(snap._marks)
        self.saved = snap.offset

    @classmethod
    def restore(cls, name: str, config: CoreConfig, codec: Codec, meta: bytes | None,
                blobs: dict[bytes, bytes]) -> PartitionState:
        st = cls(name, config, codec)
        if meta is None:
            return st
        try:
            m = msgspec.msgpack.decode(meta, type=Meta)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StateError(f"partition {name}: state meta unreadable: {exc}") from None
        if m.version not in READS:
            raise StateError(f"partition {name}: state version {m.version}, "
                             f"this worker reads {', '.join(map(str, READS))}")
        proc = st.proc
        flows = codec.loads_many(blobs.values(), proc, m.version)
        proc.flows.adopt(flows, m.now_ns)
        proc.flows.stats.update(Counter(m.stats))
        proc.packets = m.packets
        st.offset = st.saved = m.offset
        if m.version == STATE_VERSION:
            for fld, f in zip(blobs, flows):
                st._written[fld] = _mark(f)
        else:
            # An older format: the next snapshot rewrites every flow (and deletes the ended
            # ones), so the store never holds blobs of two formats under one Meta version.
            for fld in blobs:
                st._written[fld] = (None,)
        return st
