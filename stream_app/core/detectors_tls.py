"""Detectors over TLS handshake records (docs/detectors/tls-certificate.md and
docs/detectors/rare-tls-fingerprint.md). Plain functions ``(engine, records)``, registered in
stream_app.core.detectors._TLS_DETECTORS; state goes through the engine's DetectorState, so
they work the same in embedded and distributed mode.

No import of stream_app.core.detectors here: that module imports this one for the configs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache


@dataclass
class TlsCertConfig:
    """Expired, not yet valid or self-signed server certificates on internal services."""

    internal_cidrs: list[str] = field(default_factory=list)
    """Besides private addresses (RFC 1918, RFC 4193, loopback, ...; Python's
    ``ipaddress.is_private``), the server networks counted as internal."""
    any_server: bool = False
    """Check every server, not only internal ones."""
    self_signed: bool = True
    expired: bool = True
    window: float = 3600.0
    """One alert per server (address and port) and problem per window."""
    severity: str = "medium"


@dataclass
class RareFingerprintConfig:
    """A client TLS fingerprint (JA4) never seen before, once the detector has learnt."""

    warmup: float = 3600.0
    """Capture seconds after the first TLS record during which fingerprints are only learnt
    (a fresh start would otherwise call every fingerprint new)."""
    memory: float = 7 * 86400.0
    """How long a fingerprint stays known after it was last seen."""
    max_sources: int = 1
    """Alert while the fingerprint has been seen from at most this many sources in the
    window (a new browser version rolled out to many hosts at once is not rare)."""
    window: float = 3600.0
    severity: str = "low"


@lru_cache(maxsize=64)
def _networks(cidrs: tuple[str, ...]):
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@lru_cache(maxsize=65536)
def _internal(addr: str, cidrs: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return ip.is_private or any(ip in n for n in _networks(cidrs))


def tls_certificates(engine, records) -> None:
    c = engine.config.tls_certificate
    if c is None:
        return
    cidrs = tuple(c.internal_cidrs)
    # The subject is the service (address:port), not an actor: no source, one target.
    for r in records:
        if not r.cert_chain or not (c.any_server or _internal(r.dstaddr, cidrs)):
            continue
        leaf = r.cert_chain[0]
        server = f"{r.dstaddr}:{r.dstport}"
        ws = r.ts - r.ts % c.window
        name = r.server_name or leaf.subject
        if c.self_signed and leaf.self_signed:
            engine._emit("tls_self_signed_certificate", c.severity, None, [server], r,
                         r.ts, ws, ws + c.window, {"port": r.dstport, "chain": len(r.cert_chain)},
                         f"internal TLS service {server} ({name}) presented a self-signed "
                         f"certificate: {leaf.subject}")
        if c.expired and (leaf.not_after < r.ts or leaf.not_before > r.ts):
            what = "expired" if leaf.not_after < r.ts else "not yet valid"
            engine._emit("tls_expired_certificate", c.severity, None, [server], r, r.ts,
                         ws, ws + c.window,
                         {"port": r.dstport, "not_after": int(leaf.not_after),
                          "not_before": int(leaf.not_before)},
                         f"internal TLS service {server} ({name}) presented a certificate "
                         f"that is {what}: {leaf.subject}")


def rare_fingerprints(engine, records) -> None:
    c = engine.config.rare_tls_fingerprint
    if c is None:
        return
    st = engine.state
    start = None
    seen = engine._seen  # the engine's per-batch memo
    for r in records:
        if r.ja4 is None:
            continue
        if start is None:  # one read per batch (a Redis round trip in distributed mode)
            start = st.get(("ja4", "start"))
            if start is None:
                start = r.ts
                st.put(("ja4", "start"), start, r.ts + c.memory)
        ws = r.ts - r.ts % c.window
        we = ws + c.window
        memo = ("ja4", r.ja4, r.srcaddr, ws)
        if memo in seen:  # the same client and fingerprint again in this batch: no news
            continue
        seen.add(memo)
        sources = st.add_distinct(("ja4src", r.ja4, ws), r.srcaddr, we + engine.config.lateness)
        known = st.get(("ja4", r.ja4))
        first = r.ts if known is None else min(known, r.ts)
        st.put(("ja4", r.ja4), first, r.ts + c.memory)  # known while in use, by first sight
        if r.ts - start < c.warmup or first - start < c.warmup:
            continue  # still learning, or learnt then
        if first >= ws and sources <= c.max_sources:
            # First seen in this window, after the warm-up, from few sources so far (the
            # engine's ids and rate limit keep it to one alert per source and window).
            engine._emit("rare_tls_fingerprint", c.severity, r.srcaddr,
                         [f"{r.dstaddr}:{r.dstport}"], r, r.ts, ws, we,
                         {"sources": sources, "port": r.dstport},
                         f"{r.srcaddr} used a TLS client fingerprint never seen before "
                         f"(JA4 {r.ja4}, SNI {r.server_name or '-'})")


TLS_DETECTORS = [tls_certificates, rare_fingerprints]
