"""DNS detectors over DnsTransaction records: tunnelling/exfiltration and NXDOMAIN storms.

Both keep their windowed per-source state in the engine's DetectorState (so they work the
same on the Redis store in distributed mode), keyed by the client, never by the flow: a
tunnel's queries use a new source port each, so they are different flows and partitions.
Docs: docs/detectors/dns_tunnel.md, docs/detectors/nxdomain_storm.md.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "ac", "gov", "edu", "ne", "or", "go",
                           "gob", "mil", "nic", "ltd", "plc", "sch"})
"""Second-level labels under which country TLDs register (example.co.uk, example.com.au): a
hand-kept approximation of the Public Suffix List (tldextract needs the list downloaded; a
wrong split only moves the registered domain one label, which the thresholds tolerate)."""


@dataclass
class DnsTunnelConfig:
    window: float = 300.0
    min_distinct_subdomains: int = 60
    """Distinct names queried under one registered domain by one client in the window."""
    min_long_queries: int = 30
    """Of which this many look encoded: a label of at least ``long_label`` characters, or a
    subdomain part of at least ``long_subdomain`` characters with Shannon entropy of at least
    ``min_entropy`` bits per character."""
    long_label: int = 40
    long_subdomain: int = 52
    min_entropy: float = 3.5
    min_txt_queries: int = 100
    """Or: this many TXT/NULL queries for distinct names under one domain (TXT carries the
    downstream of most tunnels)."""
    ignore_domains: list[str] = field(default_factory=lambda: [
        "in-addr.arpa", "ip6.arpa", "local"])
    """Registered domains never reported (reverse lookups; add your anti-virus/reputation
    lookup services, which encode hashes in names by design)."""
    severity: str = "high"


@dataclass
class NxdomainStormConfig:
    window: float = 60.0
    min_nxdomain: int = 50
    """NXDOMAIN answers to one client in the window..."""
    min_distinct: int = 20
    """... for at least this many distinct names (one name retried is a misconfiguration,
    many random names is a DGA or a scan of names)."""
    severity: str = "medium"


def registered_domain(name: str) -> tuple[str, str]:
    """(registered domain, the labels left of it) of a query name, lower case."""
    labels = name.lower().rstrip(".").split(".")
    k = 2
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        k = 3
    if len(labels) <= k:
        return ".".join(labels), ""
    return ".".join(labels[-k:]), ".".join(labels[:-k])


def entropy(s: str) -> float:
    n = len(s)
    if not n:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def looks_encoded(sub: str, c: DnsTunnelConfig) -> bool:
    if not sub:
        return False
    if max(len(x) for x in sub.split(".")) >= c.long_label:
        return True
    plain = sub.replace(".", "")
    return len(plain) >= c.long_subdomain and entropy(plain) >= c.min_entropy


def dns_tunnel(engine, records) -> None:
    c: DnsTunnelConfig | None = getattr(engine.config, "dns_tunnel", None)
    if c is None:
        return
    ignore = set(c.ignore_domains)
    # The batch grouped first by (client, domain, window): one state operation per distinct
    # name and one per counter, not one per record (each is a Redis round trip when shared).
    groups: dict = {}
    for r in records:
        if r.query is None or "no_query" in r.tags:
            continue
        if r.ts > engine.now:
            engine.now = r.ts
        dom, sub = registered_domain(r.query)
        if not sub or dom in ignore or dom.rsplit(".", 1)[-1] in ignore:
            continue
        ws = r.ts - r.ts % c.window
        g = groups.get((r.srcaddr, dom, ws))
        if g is None:
            g = groups[(r.srcaddr, dom, ws)] = [set(), 0, set(), r]
        g[0].add(sub)
        if looks_encoded(sub, c):
            g[1] += 1
        if r.qtype in (16, 10):
            g[2].add(sub)
        g[3] = r
    st = engine.state
    lateness = engine.config.lateness
    for (src, dom, ws), (subs, encoded, txt, r) in groups.items():
        exp = ws + c.window + lateness
        base = ("dt", src, dom, ws)
        n = 0
        for sub in subs:
            n = st.add_distinct(base + ("names",), sub, exp)
        long_n = st.incr(base + ("long",), encoded, exp)
        txt_n = 0
        for sub in txt:
            txt_n = st.add_distinct(base + ("txt",), sub, exp)
        if (n >= c.min_distinct_subdomains and long_n >= c.min_long_queries) \
                or txt_n >= c.min_txt_queries:
            engine._emit(
                "dns_tunnel", c.severity, src, [dom], r, r.ts, ws, ws + c.window,
                {"distinct_subdomains": n, "encoded_queries": long_n, "txt_null_queries": txt_n},
                f"{src} queried {n} distinct names under {dom} ({long_n} long or "
                f"high-entropy, {txt_n} TXT/NULL) within {c.window:g} s: DNS tunnelling or "
                f"exfiltration")


def nxdomain_storm(engine, records) -> None:
    c: NxdomainStormConfig | None = getattr(engine.config, "nxdomain_storm", None)
    if c is None:
        return
    groups: dict = {}
    for r in records:
        if r.rcode != 3 or r.query is None:
            continue
        if r.ts > engine.now:
            engine.now = r.ts
        ws = r.ts - r.ts % c.window
        g = groups.get((r.srcaddr, ws))
        if g is None:
            g = groups[(r.srcaddr, ws)] = [0, set(), r]
        g[0] += 1
        g[1].add(r.query.lower())
        g[2] = r
    st = engine.state
    lateness = engine.config.lateness
    for (src, ws), (count, names, r) in groups.items():
        exp = ws + c.window + lateness
        n = st.incr(("nx", src, ws), count, exp)
        distinct = 0
        for name in names:
            distinct = st.add_distinct(("nxn", src, ws), name, exp)
        if n >= c.min_nxdomain and distinct >= c.min_distinct:
            engine._emit(
                "nxdomain_storm", c.severity, src, [r.dstaddr], r, r.ts, ws,
                ws + c.window, {"nxdomain": n, "distinct_names": distinct},
                f"{src} got {n} NXDOMAIN answers for {distinct} distinct names within "
                f"{c.window:g} s (a domain generation algorithm, a name scan or a broken "
                f"search list)")


DETECTORS = [dns_tunnel, nxdomain_storm]
"""Registered in stream_app.core.detectors._DNS_DETECTORS (this module imports nothing of it, so
its configs can be fields of DetectConfig)."""
