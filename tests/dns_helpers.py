"""Running the core over a capture and keeping every kind of record (the DNS records are not
written by ``analyze`` until the dns.jsonl output lands)."""

from __future__ import annotations

from pathlib import Path

from collectors.capture import open_capture
from collectors.decode import Decoder
from collectors.source import capture_batches
from stream_app.adapters.embedded import payload_policy
from stream_app.core.processor import EXPIRE_EVERY, CoreConfig, Processor, Results
from stream_app.core.flowtable import FlowConfig
from stream_app.core.l7 import L7Config


def core_run(paths, l7: L7Config | None = L7Config(), flows: FlowConfig | None = None,
             detect=None, snapshot_every: int = 0, restore=None) -> tuple[Results, Processor]:
    """All results of the core over ``paths`` (a Results holding every kind), and the core.
    ``restore``: a function (core) -> core called every ``snapshot_every`` batches, to prove
    that state saved and restored mid-capture changes nothing."""
    core = Processor(CoreConfig(flows=flows or FlowConfig(), l7=l7, detect=detect))
    decoder = Decoder(payload=payload_policy(l7))
    total = Results()

    def add(r: Results) -> None:
        for k in ("flows", "http", "alerts", "dns", "tls", "ssh"):
            getattr(total, k).extend(getattr(r, k))

    n = 0
    for p in paths:
        reader = open_capture(Path(p))
        for batch in capture_batches(reader, decoder, fast=True):
            add(core.process(batch))
            n += 1
            if n % EXPIRE_EVERY == 0:
                add(core.tick())
            if snapshot_every and n % snapshot_every == 0:
                core = restore(core)
        reader.close()
    add(core.finish())
    return total, core
