"""Logs on stderr: one JSON object per line (for machines: Kubernetes, CloudWatch Logs) or
one readable line (``text``). ``--log-format`` on the ``mirrorscope`` command, or
MIRRORSCOPE_LOG_FORMAT, chooses; by default text on a terminal, JSON otherwise."""

from __future__ import annotations

import logging
import os
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


class TextFormatter(logging.Formatter):
    """``2026-12-04T16:04:11.123Z info mirrorscope.collect: message key=value ...``"""

    def __init__(self, static: dict | None = None):
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) \
            + f".{int(record.msecs):03d}Z"
        extra = {k: v for k, v in record.__dict__.items() if k not in _STD and not k.startswith("_")}
        tail = " ".join(f"{k}={_short(v)}" for k, v in extra.items())
        line = f"{ts} {record.levelname.lower()} {record.name}: {record.getMessage()}"
        if tail:
            line += "  " + tail
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _short(v) -> str:
    s = v if isinstance(v, str) else orjson.dumps(v, default=str).decode()
    return s if len(s) <= 200 else s[:197] + "..."


FORMAT_ENV = "MIRRORSCOPE_LOG_FORMAT"


def log_format() -> str:
    f = os.environ.get(FORMAT_ENV, "").strip().lower()
    if f in ("text", "json"):
        return f
    return "text" if sys.stderr.isatty() else "json"


def make_formatter(static: dict | None = None) -> logging.Formatter:
    """The formatter MIRRORSCOPE_LOG_FORMAT asks for (also for Faust's logging config)."""
    return (TextFormatter if log_format() == "text" else JsonFormatter)(static)


# Client libraries whose INFO logs are chatter to a user (connections, group joins, ...):
# WARNING and above only, unless debugging. kafka-python logs every failed reconnect as an
# error, so it is quieter still: the components log what matters themselves.
THIRD_PARTY = ("aiokafka", "faust", "mode", "botocore", "boto3", "urllib3", "s3transfer",
               "aiohttp.access")


def setup(level: str = "info", **static) -> None:
    """One handler on stderr for the root logger, in the chosen format (log_format)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(make_formatter(static))
    root.addHandler(h)
    lvl = getattr(logging, level.upper(), logging.INFO)
    root.setLevel(lvl)
    debug = lvl <= logging.DEBUG
    logging.getLogger("kafka").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
