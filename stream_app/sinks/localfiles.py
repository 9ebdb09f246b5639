"""JSON-lines files, one record a line, keys as in schemas/."""

from __future__ import annotations

from pathlib import Path

import msgspec


class JsonlWriter:
    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "wb", buffering=1 << 20)
        self._enc = msgspec.json.Encoder()
        self.written = 0

    def write(self, records) -> None:
        if not records:
            return
        self._f.write(self._enc.encode_lines(records))
        self.written += len(records)

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
