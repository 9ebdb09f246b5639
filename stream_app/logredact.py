"""Log lines go through the core's redaction (stream_app/core/redact.py) like records do: a
URL with a token, a ``password=`` pair or a ``user:pass@`` in a message or a string extra is
redacted when the record is made, whichever library logs it and whichever handler writes it.

Installed once per process by the `mirrorscope` entry point (a LogRecord factory, so it also
covers the loggers Faust and aiokafka configure themselves). Only records that pass their
logger's level are made, so a disabled debug line costs nothing here."""

from __future__ import annotations

import logging

from stream_app.core.redact import DEFAULT

_STD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    base = logging.getLogRecordFactory()
    text = DEFAULT.redactor.text

    def factory(*args, **kwargs):
        record = base(*args, **kwargs)
        try:
            msg = record.getMessage()
        except Exception:  # a bad format: let the handler report it as it would
            return record
        clean = text(msg)
        if clean is not msg:
            record.msg, record.args = clean, ()
        return record

    logging.setLogRecordFactory(factory)
    # extras (logger.info(..., extra={...})) are set on the record after the factory: a filter
    # on the root logger's handlers would miss child loggers, so wrap makeRecord instead
    make = logging.Logger.makeRecord

    def make_record(self, *args, **kwargs):
        record = make(self, *args, **kwargs)
        for k, v in record.__dict__.items():
            if k not in _STD and isinstance(v, str):
                clean = text(v)
                if clean is not v:
                    record.__dict__[k] = clean
        return record

    logging.Logger.makeRecord = make_record
