"""The processing core as one function of (packet records, state) -> (results, state).

Every adapter drives this same object: the embedded runner (capture files, a UDP socket), the
Faust worker (Kafka) and the Kinesis consumer. It is plain synchronous Python with no I/O:
the adapter decides where packets come from and where results go.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.records import (
    Alert,
    DnsTransaction,
    FlowRecord,
    HttpTransaction,
    PacketRecord,
    SshSession,
    TlsHandshake,
)
from stream_app.core.detectors import DetectConfig, Detectors
from stream_app.core.flowtable import FlowConfig, FlowTable
from stream_app.core.l7 import L7, L7Config


EXPIRE_EVERY = 8
"""Batches between timeout sweeps (``tick``). Every timeout decision is also taken when a
flow's next packet arrives, so the sweep only decides how soon an idle flow is reported,
never what its record says."""


@dataclass(slots=True)
class Results:
    """What one step of the core produced, by kind."""

    flows: list[FlowRecord] = field(default_factory=list)
    http: list[HttpTransaction] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dns: list[DnsTransaction] = field(default_factory=list)
    tls: list[TlsHandshake] = field(default_factory=list)
    ssh: list[SshSession] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.flows or self.http or self.alerts or self.dns or self.tls or self.ssh)


@dataclass
class CoreConfig:
    flows: FlowConfig = field(default_factory=FlowConfig)
    l7: L7Config | None = field(default_factory=L7Config)
    """HTTP analysis; None for flow records only (packets need no payload then)."""
    detect: DetectConfig | None = field(default_factory=DetectConfig)
    """Detectors (stream_app/core/detectors.py) over the flow and HTTP records; None: off."""


class Processor:
    def __init__(self, config: CoreConfig | None = None):
        self.config = config or CoreConfig()
        self.l7 = L7(self.config.l7) if self.config.l7 is not None else None
        self.flows = FlowTable(self.config.flows, self.l7)
        self.detectors = Detectors(self.config.detect) if self.config.detect is not None else None
        self.packets = 0

    def process(self, batch: Iterable[PacketRecord]) -> Results:
        """Account a batch of packet records, in capture order."""
        if not isinstance(batch, (list, tuple)):
            batch = list(batch)
        self.packets += len(batch)
        return self._results(self.flows.add_batch(batch))

    def tick(self, now_ns: int | None = None) -> Results:
        """End what timed out by ``now_ns`` (default: the latest packet time seen)."""
        return self._results(self.flows.expire(now_ns))

    def finish(self, now_ns: int | None = None) -> Results:
        """End of input: report everything still open. ``now_ns``: the input's last time, when
        this processor saw only part of it (one partition of a replayed capture)."""
        if now_ns is not None and now_ns > self.flows.now_ns:
            self.flows.now_ns = now_ns
        return self._results(self.flows.flush())

    def _results(self, flows: list[FlowRecord]) -> Results:
        if self.l7 is not None:
            http = self.l7.take()
            dns, tls, ssh = self.l7.take_more()
        else:
            http, dns, tls, ssh = [], [], [], []
        d = self.detectors
        if d is None:
            return Results(flows=flows, http=http, dns=dns, tls=tls, ssh=ssh)
        # Detectors see records, not packets: nothing is added to the per-packet path.
        try:
            alerts = d.observe(flows, http, self.flows.now_ns / 1e9, dns=dns, tls=tls, ssh=ssh)
        except Exception as exc:  # noqa: BLE001 - records already made must still go out
            self.flows.stats["detector_errors"] += 1
            self.flows._note_error("detectors", exc)
            alerts = []
        return Results(flows=flows, http=http, alerts=alerts, dns=dns, tls=tls, ssh=ssh)

    def stats(self) -> dict[str, int]:
        """The core's counters for summaries and metrics: flows started, ended, evicted
        (the max_flows cap), packets and flows whose processing raised (packet_errors,
        l7_errors, detector_errors: counted, never fatal), reassembly gaps and buffer cap
        hits, and detector keys evicted by their cap."""
        out = {k: v for k, v in self.flows.stats.items() if v}
        for k in ("flows_evicted", "packet_errors", "l7_errors", "detector_errors"):
            out.setdefault(k, 0)
        out["flows_open"] = len(self.flows.flows)
        if self.l7 is not None:
            st = self.l7.stats
            out["http_flows"] = self.l7.http_flows
            for name, n in self.l7.flows_by_proto.items():
                out[f"{name}_flows"] = n
            out["reassembly_gaps"] = st.gaps
            out["reassembly_cap_hits"] = st.cap_hits
            out["reassembly_jumps"] = st.jumps
            # DNS: malformed messages, retransmitted queries, responses without a query,
            # pending queries reported early (stream_app/core/dns.py).
            for name, n in (getattr(self.l7, "dns_stats", None) or {}).items():
                out[f"dns_{name}"] = n
        if self.detectors is not None:
            ds = getattr(self.detectors.state, "stats", None) or {}
            out["detector_keys_evicted"] = ds.get("evicted_keys", 0)
        return out

    @property
    def errors(self) -> list[str]:
        """The first exceptions the flow boundary caught, as text."""
        return self.flows.errors
