"""Run captures through the core in-process and collect every kind of record (flows, HTTP,
DNS, TLS, SSH, alerts), for tests of the analyzers that do not depend on which files the
embedded writer makes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from collectors.capture import open_capture
from collectors.decode import Decoder
from collectors.source import capture_batches
from stream_app.adapters.embedded import payload_policy
from stream_app.core.detectors import DetectConfig
from stream_app.core.l7 import L7Config
from stream_app.core.processor import EXPIRE_EVERY, CoreConfig, Processor
from tests.conftest import NO_TIMEOUTS


@dataclass
class AllRecords:
    flows: list = field(default_factory=list)
    http: list = field(default_factory=list)
    tls: list = field(default_factory=list)
    ssh: list = field(default_factory=list)
    alerts: list = field(default_factory=list)

    def add(self, res) -> None:
        self.flows += res.flows
        self.http += res.http
        self.tls += res.tls
        self.ssh += res.ssh
        self.alerts += res.alerts


def records(*paths: Path, detect: DetectConfig | None = None, flows=NO_TIMEOUTS) -> AllRecords:
    l7 = L7Config()
    core = Processor(CoreConfig(flows=flows, l7=l7, detect=detect))
    decoder = Decoder(payload=payload_policy(l7))
    out = AllRecords()
    for p in paths:
        reader = open_capture(p)
        for n, batch in enumerate(capture_batches(reader, decoder), 1):
            out.add(core.process(batch))
            if n % EXPIRE_EVERY == 0:
                out.add(core.tick())
        reader.close()
    out.add(core.finish())
    return out
