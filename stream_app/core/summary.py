"""Aggregates for the end-of-run summary: flows by protocol, top talkers. Pure, no I/O."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter

from schemas.kinds import NAMES
from schemas.records import FlowRecord, HttpTransaction

PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP", 47: "GRE", 50: "ESP"}


def proto_name(p: int) -> str:
    return PROTO_NAMES.get(p, f"proto {p}")


@dataclass
class FlowSummary:
    flows: int = 0
    packets: int = 0
    bytes: int = 0
    by_proto: Counter = field(default_factory=Counter)
    # (originator, responder) -> bytes both ways: who talks to whom the most
    pairs: Counter = field(default_factory=Counter)
    vnis: Counter = field(default_factory=Counter)

    def add(self, records: list[FlowRecord]) -> None:
        for r in records:
            self.flows += 1
            self.packets += r.packets
            self.bytes += r.bytes
            self.by_proto[proto_name(r.protocol)] += 1
            self.pairs[(r.srcaddr, r.dstaddr)] += r.bytes
            if r.vni is not None:
                self.vnis[r.vni] += 1

    def top_talkers(self, n: int = 10) -> list[tuple[str, str, int]]:
        return [(a, b, v) for (a, b), v in self.pairs.most_common(n)]


@dataclass
class HttpSummary:
    transactions: int = 0
    by_class: Counter = field(default_factory=Counter)
    tags: Counter = field(default_factory=Counter)
    hosts: Counter = field(default_factory=Counter)

    def add(self, records: list[HttpTransaction]) -> None:
        # Counted in C (Counter over map/filter): this runs for every transaction.
        self.transactions += len(records)
        by_class = self.by_class
        for sc, n in Counter(map(_STATUS, records)).items():
            by_class[_STATUS_CLASS.get(sc // 100, "other") if sc else "none"] += n
        for t in filter(None, map(_TAGS, records)):
            self.tags.update(t)
        self.hosts.update(filter(None, map(_HOST, records)))


_STATUS_CLASS = {i: f"{i}xx" for i in range(1, 6)}
_STATUS = attrgetter("status_code")
_TAGS = attrgetter("tags")
_HOST = attrgetter("host")


@dataclass
class AlertSummary:
    alerts: int = 0
    by_type: Counter = field(default_factory=Counter)
    first: list = field(default_factory=list)
    """The first ``keep`` alerts (for the terminal summary)."""
    keep: int = 20

    def add(self, alerts) -> None:
        for a in alerts:
            self.alerts += 1
            self.by_type[a.type] += 1
            if len(self.first) < self.keep:
                self.first.append(a)

    def listing(self) -> list[dict]:
        return [{"type": a.type, "severity": a.severity, "source": a.source,
                 "summary": a.summary} for a in self.first]


@dataclass
class RecordCounts:
    """Records made per result kind (schemas.kinds), for the summary's counts of the kinds
    that have no aggregate of their own (dns, tls, ssh)."""

    by_kind: Counter = field(default_factory=Counter)

    def add(self, results) -> None:
        for name in NAMES:
            recs = getattr(results, name, None)
            if recs:
                self.by_kind[name] += len(recs)

    def as_dict(self) -> dict[str, int]:
        return {n: self.by_kind.get(n, 0) for n in NAMES}
