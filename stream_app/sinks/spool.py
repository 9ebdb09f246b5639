"""A bounded local spool of finished files: written (and fsynced) before anything is
committed, deleted once the file is in S3, re-sent on startup. An S3 outage then costs disk,
not records; beyond ``max_bytes`` files are dropped, counted and logged."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger("mirrorscope.sink.spool")


@dataclass
class SpoolEntry:
    key: str
    metadata: dict[str, str]
    data_path: Path
    meta_path: Path
    size: int

    def read(self) -> bytes:
        return self.data_path.read_bytes()


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Spool:
    def __init__(self, directory: Path, max_bytes: int = 1 << 30):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.dropped_files = 0
        self.dropped_records = 0
        for tmp in self.dir.glob("*.tmp"):  # a write cut short by a crash
            tmp.unlink(missing_ok=True)
        for data in self.dir.glob("*.data"):  # data without its (later-written) meta file
            if not data.with_suffix(".json").exists():
                data.unlink(missing_ok=True)
        self._bytes = sum(p.stat().st_size for p in self.dir.glob("*.data"))

    @property
    def bytes(self) -> int:
        return self._bytes

    def _paths(self, key: str) -> tuple[Path, Path]:
        h = hashlib.sha256(key.encode()).hexdigest()[:40]
        return self.dir / f"{h}.data", self.dir / f"{h}.json"

    def put(self, key: str, data: bytes, metadata: dict[str, str], records: int = 0) -> bool:
        """Durably store one file; False (and a counted drop) when the spool is full. The same
        key replaces its earlier file (a replay)."""
        data_path, meta_path = self._paths(key)
        old = data_path.stat().st_size if data_path.exists() else 0
        if self._bytes - old + len(data) > self.max_bytes:
            self.dropped_files += 1
            self.dropped_records += records
            log.error("spool full (%d of %d bytes): dropped %s (%d records; %d files dropped so far)",
                      self._bytes, self.max_bytes, key, records, self.dropped_files)
            return False
        _fsync_write(data_path, data)
        _fsync_write(meta_path, orjson.dumps({"key": key, "metadata": metadata}))
        self._bytes += len(data) - old
        return True

    def pending(self) -> list[SpoolEntry]:
        """Spooled files, oldest first."""
        out = []
        for meta_path in self.dir.glob("*.json"):
            data_path = meta_path.with_suffix(".data")
            try:
                meta = orjson.loads(meta_path.read_bytes())
                st = data_path.stat()
            except (OSError, ValueError):
                continue
            out.append((st.st_mtime_ns, SpoolEntry(meta["key"], meta["metadata"], data_path,
                                                   meta_path, st.st_size)))
        out.sort(key=lambda t: t[0])
        return [e for _, e in out]

    def remove(self, entry: SpoolEntry) -> None:
        entry.meta_path.unlink(missing_ok=True)
        if entry.data_path.exists():
            entry.data_path.unlink()
            self._bytes -= entry.size
