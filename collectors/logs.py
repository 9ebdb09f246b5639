"""Structured logs: one JSON object per line on stderr."""

from __future__ import annotations

import logging
import sys
import time

import orjson

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict | None = None):
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        d = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        d.update(self.static)
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                d[k] = v
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(d, default=str).decode()


def setup(level: str = "info", **static) -> None:
    """JSON lines on stderr for the root logger. The client libraries' own logs (kafka-python
    logs every failed reconnect as an error) are silenced unless debugging: the collector
    logs what matters itself (destination not ready, records dropped and why)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JsonFormatter(static))
    root.addHandler(h)
    lvl = getattr(logging, level.upper(), logging.INFO)
    root.setLevel(lvl)
    quiet = logging.DEBUG if lvl <= logging.DEBUG else logging.CRITICAL
    for name in ("kafka", "botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(quiet)
