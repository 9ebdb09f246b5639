"""What the report shows, computed with DuckDB over the same tables `mirrorscope query` reads
(stream_app.query.connect): plain dicts and lists, no plotting here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream_app.core.summary import proto_name

# Bucket widths (seconds) for "traffic over time": the smallest giving at most ~120 buckets.
BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
MAX_EDGES = 30  # service map: the busiest client -> server pairs
MAX_LATENCIES = 200_000  # latency histogram: values sent to the page at most


@dataclass
class ReportData:
    totals: dict[str, Any] = field(default_factory=dict)
    bucket_s: int = 60
    traffic: list[dict] = field(default_factory=list)  # {t, proto, bytes, packets, flows}
    http_over_time: list[dict] = field(default_factory=list)  # {t, requests, errors}
    talkers: list[dict] = field(default_factory=list)
    ports: list[dict] = field(default_factory=list)
    edges: list[dict] = field(default_factory=list)
    statuses: list[dict] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)


def _rows(con, sql: str) -> list[dict]:
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _one(con, sql: str) -> dict:
    return _rows(con, sql)[0]


def collect(con, top: int = 10) -> ReportData:
    d = ReportData()
    f = _one(con, """
        SELECT count(*) AS flows, coalesce(sum(packets), 0) AS packets,
               coalesce(sum(bytes), 0) AS bytes,
               min(coalesce(start_time, start)) AS first, max(coalesce(end_time, "end")) AS last,
               count(DISTINCT srcaddr) AS clients, count(DISTINCT dstaddr) AS servers
        FROM mirrorscope.flows""")
    h = _one(con, """
        SELECT count(*) AS http, count(*) FILTER (WHERE status_code >= 500 OR status_code IS NULL)
                 AS http_errors,
               count(*) FILTER (WHERE status_code BETWEEN 400 AND 499) AS http_4xx,
               quantile_cont(latency, 0.5) AS p50, quantile_cont(latency, 0.95) AS p95,
               min(ts) AS first, max(ts) AS last
        FROM mirrorscope.http""")
    a = _one(con, "SELECT count(*) AS alerts, min(ts) AS first, max(ts) AS last FROM mirrorscope.alerts")
    dns = _one(con, """
        SELECT count(*) AS dns, count(*) FILTER (WHERE rcode_name = 'NXDOMAIN') AS dns_nxdomain,
               count(*) FILTER (WHERE rcode IS NULL) AS dns_unanswered FROM mirrorscope.dns""")
    tls = _one(con, """
        SELECT count(*) AS tls, count(*) FILTER (WHERE NOT established) AS tls_failed
        FROM mirrorscope.tls""")
    ssh = _one(con, "SELECT count(*) AS ssh FROM mirrorscope.ssh")
    firsts = [x for x in (f["first"], h["first"], a["first"]) if x is not None]
    lasts = [x for x in (f["last"], h["last"], a["last"]) if x is not None]
    first = min(firsts) if firsts else 0.0
    last = max(lasts) if lasts else 0.0
    span = max(1.0, last - first)
    d.totals = {"flows": f["flows"], "packets": int(f["packets"]), "bytes": int(f["bytes"]),
                "clients": f["clients"], "servers": f["servers"], "http": h["http"],
                "http_errors": h["http_errors"], "http_4xx": h["http_4xx"],
                "http_p50_ms": None if h["p50"] is None else h["p50"] * 1000,
                "http_p95_ms": None if h["p95"] is None else h["p95"] * 1000,
                "alerts": a["alerts"], "first": first, "last": last, "span_s": span,
                **dns, **tls, **ssh}
    d.bucket_s = b = next((x for x in BUCKETS if span / x <= 120), BUCKETS[-1])

    # A record counts in the bucket it started in (records of long flows are cut every
    # active timeout, 60 s by default, so the picture stays close at minute scale).
    d.traffic = [{**r, "proto": proto_name(r["protocol"])} for r in _rows(con, f"""
        SELECT floor(coalesce(start_time, start) / {b}) * {b} AS t, protocol,
               sum(bytes) AS bytes, sum(packets) AS packets, count(*) AS flows
        FROM mirrorscope.flows GROUP BY ALL ORDER BY t, protocol""")]
    d.http_over_time = _rows(con, f"""
        SELECT floor(ts / {b}) * {b} AS t, count(*) AS requests,
               count(*) FILTER (WHERE status_code >= 500 OR status_code IS NULL) AS errors
        FROM mirrorscope.http GROUP BY ALL ORDER BY t""")
    d.talkers = _rows(con, f"""
        SELECT srcaddr, dstaddr, sum(bytes) AS bytes, sum(packets) AS packets, count(*) AS flows
        FROM mirrorscope.flows GROUP BY srcaddr, dstaddr
        ORDER BY bytes DESC, srcaddr, dstaddr LIMIT {top}""")
    d.ports = [{**r, "proto": proto_name(r["protocol"])} for r in _rows(con, f"""
        SELECT protocol, dstport, sum(bytes) AS bytes, count(*) AS flows,
               count(DISTINCT srcaddr) AS clients
        FROM mirrorscope.flows GROUP BY protocol, dstport
        ORDER BY bytes DESC, protocol, dstport LIMIT {top}""")]

    # Service map: client -> server:port, with the HTTP seen on the pair.
    d.edges = _rows(con, f"""
        WITH f AS (
            SELECT srcaddr AS client, dstaddr AS server, dstport AS port, protocol,
                   count(*) AS flows, sum(bytes) AS bytes
            FROM mirrorscope.flows GROUP BY ALL
            ORDER BY bytes DESC, client, server, port LIMIT {MAX_EDGES}),
        h AS (
            SELECT srcaddr AS client, dstaddr AS server, dstport AS port, count(*) AS requests,
                   count(*) FILTER (WHERE status_code >= 500 OR status_code IS NULL) AS errors,
                   quantile_cont(latency, 0.5) AS p50, quantile_cont(latency, 0.95) AS p95
            FROM mirrorscope.http GROUP BY ALL)
        SELECT f.*, coalesce(h.requests, 0) AS requests, coalesce(h.errors, 0) AS errors,
               h.p50, h.p95
        FROM f LEFT JOIN h USING (client, server, port)
        ORDER BY f.bytes DESC, f.client, f.server, f.port""")
    for e in d.edges:
        e["proto"] = proto_name(e["protocol"])
        e["req_per_s"] = e["requests"] / span
        e["error_rate"] = e["errors"] / e["requests"] if e["requests"] else None
    d.statuses = _rows(con, """
        SELECT coalesce(CAST(status_code AS VARCHAR), 'none') AS status, count(*) AS n
        FROM mirrorscope.http GROUP BY ALL ORDER BY status""")
    d.latencies_ms = [r[0] * 1000 for r in con.execute(
        f"SELECT latency FROM mirrorscope.http WHERE latency IS NOT NULL "
        f"ORDER BY ts LIMIT {MAX_LATENCIES}").fetchall()]
    d.alerts = _rows(con, """
        SELECT alert_id, ts, type, severity, source, targets, summary, evidence,
               window_start, window_end
        FROM mirrorscope.alerts ORDER BY ts, alert_id""")
    for al in d.alerts:
        ev = al["evidence"]
        al["evidence"] = dict(ev) if ev is not None else {}
        al["targets"] = list(al["targets"] or [])
    return d


def tiers(edges: list[dict]) -> dict[str, int]:
    """Column of each address in the service map: callers left of what they call. A node's
    tier is the longest chain of callers before it (cycles are cut), so clients are tier 0,
    front ends that call back ends sit between, and leaf servers are right-most."""
    callers: dict[str, set[str]] = {}
    nodes: set[str] = set()
    for e in edges:
        c, s = e["client"], e["server"]
        nodes |= {c, s}
        if c != s:
            callers.setdefault(s, set()).add(c)
    tier: dict[str, int] = {}

    def depth(n: str, path: frozenset) -> int:
        if n in tier:
            return tier[n]
        ups = [u for u in callers.get(n, ()) if u not in path]
        t = 1 + max((depth(u, path | {n}) for u in ups), default=-1) if ups else 0
        return t

    for n in sorted(nodes):
        tier[n] = depth(n, frozenset())
    return tier
