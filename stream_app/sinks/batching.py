"""The pure part of the S3 sink: which file a record goes to, when a file is complete, and
what the object is called. No I/O, no clock of its own (callers pass ``now``).

Files are cut per *source partition* (a Kafka topic-partition, or one embedded stream per
record type) into contiguous offset ranges: one open file per source partition at a time. A
record of a later hour than the open file's closes that file first (so does one more than
``Bounds.late_s`` older than the file's hour; one less late joins the open file). So every
flushed file covers offsets [first, last] of one partition with nothing open before ``last``,
and the consumer may commit ``last + 1`` as soon as the file is durable.

Object names are derived from the source partition, the first offset and the first record's
id, and nothing that depends on where the file was cut (a wall-clock or memory-bound flush
cuts elsewhere on a replay). The consumer commits each file's offsets as soon as it is
durable, before the next file of that partition, so after a crash at most one durable file per
partition is uncommitted: the replay starts at its first offset with the same first record and
rewrites the same key, and the rest of the replayed range lands in the following file. The
last offset and the record count go into the object's metadata.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgspec

from stream_app.sinks.parquet import extension


@dataclass(frozen=True)
class RecordKind:
    """One record type as the sinks see it."""

    name: str
    """Table / key prefix: flows, http, alerts, dns, tls, ssh (schemas.kinds)."""
    struct_type: type
    id_field: str
    ts_of: Callable[[Any], float]
    """Unix seconds that place the record in dt=/hour=."""


def record_kind(name: str) -> RecordKind:
    """The sinks' view of one entry of schemas.kinds."""
    from schemas.kinds import BY_NAME
    k = BY_NAME[name]
    return RecordKind(k.name, k.struct_type, k.id_field, k.ts_of)


def flow_kind() -> RecordKind:
    return record_kind("flows")


def http_kind() -> RecordKind:
    return record_kind("http")


def alert_kind(struct_type: type) -> RecordKind:
    """Alerts: any Struct with alert_id, ts, type and severity fields (schemas.records.Alert;
    tests use stand-ins)."""
    names = {f.name for f in msgspec.structs.fields(struct_type)}
    missing = {"alert_id", "ts", "type", "severity"} - names
    if missing:
        raise TypeError(f"{struct_type.__name__} lacks alert fields {sorted(missing)}")
    return RecordKind("alerts", struct_type, "alert_id", lambda r: r.ts)


def default_kinds() -> dict[str, RecordKind]:
    """Every result kind (schemas.kinds.KINDS), by name."""
    from schemas.kinds import NAMES
    return {n: record_kind(n) for n in NAMES}


def partition_of(ts: float) -> tuple[str, str]:
    """Unix seconds -> ("YYYY-MM-DD", "HH") in UTC."""
    d = datetime.fromtimestamp(int(ts), tz=timezone.utc)
    return d.strftime("%Y-%m-%d"), d.strftime("%H")


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def object_key(prefix: str, kind: str, dt: str, hour: str, source: str, partition: int,
               first_offset: int, first_id: str, fmt: str) -> str:
    """``<prefix><kind>/dt=YYYY-MM-DD/hour=HH/<source>-<partition>-<first offset>-<id hash><ext>``."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    src = _SAFE.sub("_", source) or "_"
    idh = hashlib.sha256(first_id.encode()).hexdigest()[:16]
    return (f"{prefix}{kind}/dt={dt}/hour={hour}/"
            f"{src}-{partition:05d}-{first_offset:020d}-{idh}{extension(fmt)}")


@dataclass(frozen=True)
class Bounds:
    max_records: int = 100_000
    max_bytes: int = 16 << 20
    """Bound on the records' encoded JSON size (a deterministic stand-in for the file size;
    Parquet files come out several times smaller)."""
    max_age_s: float = 300.0
    """Wall-clock seconds a file stays open (so Athena sees data within minutes)."""
    max_pending_bytes: int = 256 << 20
    """Bound on all open files together (records as JSON; in memory they take about twice
    that): beyond it the largest open file is closed early."""
    late_s: float = 900.0
    """A record up to this many seconds older than the open file's hour still joins that file
    (and its dt=/hour= partition) instead of cutting it: records arrive roughly, not strictly,
    in time order (a TCP flow ends on its 300 s idle timeout), and cutting at every late
    record near an hour boundary would make a storm of tiny files. Deterministic (record time
    only), so a replay cuts at the same places."""


@dataclass
class Chunk:
    """A complete file's worth of records of one source partition."""

    kind: RecordKind
    dt: str
    hour: str
    source: str
    partition: int
    first_offset: int
    last_offset: int
    records: list = field(default_factory=list)
    nbytes: int = 0
    opened_at: float = 0.0
    min_ts: float = 0.0
    max_ts: float = 0.0
    hour_start: int = 0

    def key(self, prefix: str, fmt: str) -> str:
        first_id = getattr(self.records[0], self.kind.id_field)
        return object_key(prefix, self.kind.name, self.dt, self.hour, self.source,
                          self.partition, self.first_offset, first_id, fmt)

    def metadata(self) -> dict[str, str]:
        return {"mirrorscope-source": f"{self.source}:{self.partition}",
                "mirrorscope-first-offset": str(self.first_offset),
                "mirrorscope-last-offset": str(self.last_offset),
                "mirrorscope-records": str(len(self.records)),
                "mirrorscope-min-ts": repr(float(self.min_ts)),
                "mirrorscope-max-ts": repr(float(self.max_ts))}


class Batcher:
    """Groups records into Chunks. ``add`` and ``poll`` return the chunks that completed."""

    def __init__(self, bounds: Bounds | None = None):
        self.bounds = bounds or Bounds()
        self._open: dict[tuple[str, str, int], Chunk] = {}
        self._size = msgspec.json.Encoder()
        self.pending_bytes = 0

    def add(self, kind: RecordKind, source: str, partition: int, offset: int, record,
            now: float) -> list[Chunk]:
        out: list[Chunk] = []
        ts = kind.ts_of(record)
        k = (kind.name, source, partition)
        ch = self._open.get(k)
        if ch is not None and not (ch.hour_start - self.bounds.late_s <= ts < ch.hour_start + 3600):
            out.append(self._open.pop(k))
            ch = None
        if ch is None:
            dt, hour = partition_of(ts)
            ch = Chunk(kind, dt, hour, source, partition, offset, offset, opened_at=now,
                       min_ts=ts, max_ts=ts, hour_start=int(ts) - int(ts) % 3600)
            self._open[k] = ch
        ch.records.append(record)
        ch.last_offset = offset
        n = len(self._size.encode(record))
        ch.nbytes += n
        self.pending_bytes += n
        ch.min_ts = min(ch.min_ts, ts)
        ch.max_ts = max(ch.max_ts, ts)
        if len(ch.records) >= self.bounds.max_records or ch.nbytes >= self.bounds.max_bytes:
            out.append(self._open.pop(k))
        elif self.pending_bytes > self.bounds.max_pending_bytes:
            big = max(self._open, key=lambda key: self._open[key].nbytes)
            out.append(self._open.pop(big))
        for c in out:
            self.pending_bytes -= c.nbytes
        return out

    def poll(self, now: float) -> list[Chunk]:
        """The files open for longer than max_age_s."""
        due = [k for k, ch in self._open.items() if now - ch.opened_at >= self.bounds.max_age_s]
        out = [self._open.pop(k) for k in due]
        self.pending_bytes -= sum(c.nbytes for c in out)
        return out

    def flush(self) -> list[Chunk]:
        out = list(self._open.values())
        self._open.clear()
        self.pending_bytes = 0
        return out

    def discard(self, source: str, partition: int) -> int:
        """Drop the open files of a source partition (revoked: its new owner replays them)."""
        ks = [k for k in self._open if k[1] == source and k[2] == partition]
        for k in ks:
            self.pending_bytes -= self._open.pop(k).nbytes
        return len(ks)

    def open_first_offsets(self) -> dict[tuple[str, int], int]:
        """(source, partition) -> first offset still held in an open file."""
        out: dict[tuple[str, int], int] = {}
        for (_, s, p), ch in self._open.items():
            out[(s, p)] = min(out.get((s, p), ch.first_offset), ch.first_offset)
        return out

    @property
    def pending_records(self) -> int:
        return sum(len(ch.records) for ch in self._open.values())
