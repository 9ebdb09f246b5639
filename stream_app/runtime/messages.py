"""What the runtime says to a core (the place that holds partition states and runs the core on
them) and what the core answers: typed messages, msgspec tagged unions, the same whether the
core is in this process (runtime/cores.py, LocalCore) or in a subprocess (CoreProcess, where
they cross a pipe as msgpack).

A core answers every request except ``Saved``, ``Release`` and ``Layout``, in the order it
received them; per partition, that order is the order of its batches, snapshots and releases.

    Restore(tid, name, meta, blobs)      -> Restored(offset) | RestoreFailed(error)
    Apply(tid, offset, force) + batch    -> Applied | Skipped | Gap(expected) | Failed | Unowned
    Advance(tid, ns)                     -> Applied            (idle flows end by the wall clock)
    Finish(tid)                          -> Applied            (the partition's input ended)
    TakeSnapshot(tid, full)              -> SnapshotTaken
    Saved(tid, ok)                       (the store holds the last snapshot, or not)
    Release(tid)                         (forget the partition)
    Layout(partitions)                   (the result topics' partition counts, by kind)
"""

from __future__ import annotations

from typing import Any, Union

import msgspec


class Restore(msgspec.Struct, tag=True, array_like=True):
    tid: int
    name: str
    meta: bytes | None
    blobs: dict[bytes, bytes]


class Apply(msgspec.Struct, tag=True, array_like=True):
    """The batch itself travels beside the message (the broker's bytes, decoded by the core;
    or, in process, a PacketBatch or None for a message that was not one)."""

    tid: int
    offset: int
    force: bool = False
    """Apply even after a gap in offsets (the runtime judged the gap real: see gap_verdict)."""
    skip: bool = False
    """Move the state past this offset without applying the batch (it made the core raise
    before: see Failed)."""


class Advance(msgspec.Struct, tag=True, array_like=True):
    tid: int
    ns: int


class Finish(msgspec.Struct, tag=True, array_like=True):
    tid: int


class TakeSnapshot(msgspec.Struct, tag=True, array_like=True):
    tid: int
    full: bool = False


class Saved(msgspec.Struct, tag=True, array_like=True):
    tid: int
    ok: bool


class Release(msgspec.Struct, tag=True, array_like=True):
    tid: int


class Layout(msgspec.Struct, tag=True, array_like=True):
    partitions: dict[str, int]


Request = Union[Restore, Apply, Advance, Finish, TakeSnapshot, Saved, Release, Layout]


class Restored(msgspec.Struct, tag=True, array_like=True):
    offset: int


class RestoreFailed(msgspec.Struct, tag=True, array_like=True):
    error: str


class Applied(msgspec.Struct, tag=True, array_like=True):
    records: int = 0
    """Packet records in the batch (0 for Advance and Finish)."""
    undecodable: bool = False
    """The message was not a packet batch: dropped whole, the offset moves past it."""
    flows: int = 0
    http: int = 0
    alerts: int = 0
    detect_error: bool = False
    """The detectors' state store failed: the records went without alerts."""
    flows_held: int = 0
    encoded: dict[tuple[str, int], list[tuple[bytes, bytes]]] | None = None
    """From a core process: the results encoded, grouped by (kind, result partition)."""
    results: Any = None
    """In process: the core's Results themselves (never sent over a pipe)."""
    dns: int = 0
    tls: int = 0
    ssh: int = 0


class Skipped(msgspec.Struct, tag=True, array_like=True):
    """The state already includes this offset (a replay after a take-over)."""


class Gap(msgspec.Struct, tag=True, array_like=True):
    expected: int


class Failed(msgspec.Struct, tag=True, array_like=True):
    """The core raised on this batch: the partition's state, possibly half-changed, is
    dropped (not snapshotted); the runtime restores it from the store and skips the batch."""

    error: str


class Unowned(msgspec.Struct, tag=True, array_like=True):
    """The core holds no state for this partition (dropped after a failure)."""


class SnapshotTaken(msgspec.Struct, tag=True, array_like=True):
    offset: int
    meta: bytes
    put: dict[bytes, bytes]
    delete: list[bytes]


Reply = Union[Restored, RestoreFailed, Applied, Skipped, Gap, Failed, Unowned, SnapshotTaken]
