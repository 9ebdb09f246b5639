"""CloudWatch sink: metrics (PutMetricData) and alert records as CloudWatch Logs events.

The pure part (MetricAggregator, metric_batches, log_event_batches) turns records into API
payloads within the services' limits; CloudWatchSink makes the boto3 calls.

Metrics (namespace MIRRORSCOPE_CLOUDWATCH_NAMESPACE, default "MirrorScope"), summed per flush:

  Flows, Packets, Bytes            no dimension, and by Protocol (TCP UDP ICMP ICMPv6 Other)
  HttpTransactions                 no dimension, and by StatusClass (1xx..5xx, None)
  Alerts                           by Severity (the alarms module's metric) and by Type

Dimension values come from fixed sets (alert types: the first MAX_ALERT_TYPES seen, then
"Other"), never from addresses, hosts or VNIs, so the number of metric series -- and the bill --
is bounded.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from schemas.kinds import records_of

log = logging.getLogger("mirrorscope.sink.cloudwatch")

# Service limits (2026): PutMetricData 1000 metric datums and 1 MB per request; PutLogEvents
# 10,000 events and 1,048,576 bytes per batch (each event counts its UTF-8 message + 26
# bytes), events in time order, one batch spanning at most 24 hours, an event at most 256 KB.
MAX_DATUMS_PER_CALL = 1000
MAX_METRIC_PAYLOAD = 1_000_000
MAX_EVENTS_PER_CALL = 10_000
MAX_LOG_BATCH_BYTES = 1_048_576
LOG_EVENT_OVERHEAD = 26
MAX_EVENT_BYTES = 256 * 1024 - LOG_EVENT_OVERHEAD
MAX_BATCH_SPAN_MS = 24 * 3600 * 1000
MAX_EVENT_AGE_MS = 14 * 24 * 3600 * 1000  # older events are rejected by the service
MAX_EVENT_FUTURE_MS = 2 * 3600 * 1000

PROTOCOLS = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6"}
SEVERITIES = ("info", "low", "medium", "high", "critical")
MAX_ALERT_TYPES = 50


def protocol_name(p: int) -> str:
    return PROTOCOLS.get(p, "Other")


def status_class(code: int | None) -> str:
    if code is None or not 100 <= code <= 599:
        return "None"
    return f"{code // 100}xx"


def severity_name(s) -> str:
    s = str(s).lower()
    return s if s in SEVERITIES else "Other"


# DNS response codes that get a dimension value of their own (RFC 1035/2136 names, as the DNS
# parser writes rcode_name); any other becomes "Other", so a hostile server cannot make
# unbounded metric names.
DNS_RCODES = frozenset({"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
                        "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE"})


def rcode_name(t) -> str:
    """The Rcode dimension of a DNS transaction: NoResponse when it was not answered."""
    if t.rcode is None:
        return "NoResponse"
    name = (t.rcode_name or "").upper()
    return name if name in DNS_RCODES else "Other"


class MetricAggregator:
    """Sums records into (metric, dimensions) -> (value, unit) until ``take``."""

    def __init__(self, max_alert_types: int = MAX_ALERT_TYPES):
        self.values: Counter = Counter()
        self.units: dict = {}
        self.max_alert_types = max_alert_types
        self._alert_types: set[str] = set()

    def _add(self, name: str, dims: tuple, value: float, unit: str = "Count") -> None:
        self.values[(name, dims)] += value
        self.units[(name, dims)] = unit

    def add_flows(self, flows: Iterable) -> None:
        for f in flows:
            p = (("Protocol", protocol_name(f.protocol)),)
            for dims in ((), p):
                self._add("Flows", dims, 1)
                self._add("Packets", dims, f.packets)
                self._add("Bytes", dims, f.bytes, "Bytes")

    def add_http(self, txs: Iterable) -> None:
        for t in txs:
            self._add("HttpTransactions", (), 1)
            self._add("HttpTransactions", (("StatusClass", status_class(t.status_code)),), 1)

    def alert_type(self, t) -> str:
        t = str(t)
        if t in self._alert_types:
            return t
        if len(self._alert_types) < self.max_alert_types:
            self._alert_types.add(t)
            return t
        return "Other"

    def add_alerts(self, alerts: Iterable) -> None:
        for a in alerts:
            self._add("Alerts", (("Severity", severity_name(a.severity)),), 1)
            self._add("Alerts", (("Type", self.alert_type(a.type)),), 1)

    def add_dns(self, txs: Iterable) -> None:
        for t in txs:
            self._add("DnsTransactions", (), 1)
            self._add("DnsTransactions", (("Rcode", rcode_name(t)),), 1)

    def add_tls(self, hss: Iterable) -> None:
        for h in hss:
            self._add("TlsHandshakes", (), 1)
            self._add("TlsHandshakes", (("Outcome", "established" if h.established
                                          else "failed"),), 1)

    def add_ssh(self, sessions: Iterable) -> None:
        for _ in sessions:
            self._add("SshSessions", (), 1)

    def add(self, kind: str, records: Iterable) -> None:
        """The metrics of one result kind's records (schemas.kinds names)."""
        adder = getattr(self, f"add_{kind}", None)
        if adder is None:
            raise ValueError(f"unknown record kind {kind!r}")
        adder(records)

    def __bool__(self) -> bool:
        return bool(self.values)

    def take(self, timestamp: float) -> list[dict]:
        """The summed datums (PutMetricData's MetricData entries); resets the sums."""
        out = []
        for (name, dims), v in sorted(self.values.items()):
            d = {"MetricName": name, "Value": float(v), "Unit": self.units[(name, dims)],
                 "Timestamp": timestamp}
            if dims:
                d["Dimensions"] = [{"Name": k, "Value": val} for k, val in dims]
            out.append(d)
        self.values.clear()
        self.units.clear()
        return out


def _datum_size(d: dict) -> int:
    # a generous estimate of a datum's size in the query-encoded request
    return 200 + sum(60 + len(x["Name"]) + len(x["Value"]) for x in d.get("Dimensions", ()))


def metric_batches(datums: list[dict]) -> list[list[dict]]:
    out: list[list[dict]] = []
    cur: list[dict] = []
    size = 0
    for d in datums:
        s = _datum_size(d)
        if cur and (len(cur) >= MAX_DATUMS_PER_CALL or size + s > MAX_METRIC_PAYLOAD):
            out.append(cur)
            cur, size = [], 0
        cur.append(d)
        size += s
    if cur:
        out.append(cur)
    return out


def alert_event(alert, now_ms: int) -> dict:
    """One alert -> one log event: the record as JSON; its time clamped into what the service
    accepts (the record keeps the original ``ts``)."""
    msg = msgspec.json.encode(alert)
    if len(msg) > MAX_EVENT_BYTES:
        msg = msg[:MAX_EVENT_BYTES]
    ts_ms = int(float(alert.ts) * 1000)
    ts_ms = max(now_ms - MAX_EVENT_AGE_MS + 3600_000, min(ts_ms, now_ms + MAX_EVENT_FUTURE_MS - 60_000))
    return {"timestamp": ts_ms, "message": msg.decode("utf-8", "replace")}


def log_event_batches(events: list[dict]) -> list[list[dict]]:
    """Time-ordered batches within PutLogEvents' count, size and 24-hour span limits."""
    out: list[list[dict]] = []
    cur: list[dict] = []
    size = 0
    for e in sorted(events, key=lambda e: e["timestamp"]):
        s = len(e["message"].encode()) + LOG_EVENT_OVERHEAD
        if cur and (len(cur) >= MAX_EVENTS_PER_CALL or size + s > MAX_LOG_BATCH_BYTES
                    or e["timestamp"] - cur[0]["timestamp"] > MAX_BATCH_SPAN_MS):
            out.append(cur)
            cur, size = [], 0
        cur.append(e)
        size += s
    if cur:
        out.append(cur)
    return out


@dataclass
class CloudWatchSettings:
    namespace: str = "MirrorScope"
    log_group: str | None = "/mirrorscope/alerts"
    log_stream: str | None = None
    """Default: <hostname>-<pid> (one stream per sink instance)."""
    endpoint_url: str | None = None
    region: str | None = None
    flush_interval_s: float = 60.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5

    @classmethod
    def from_env(cls, environ=None, **over) -> "CloudWatchSettings":
        env = os.environ if environ is None else environ
        kw = dict(namespace=env.get("MIRRORSCOPE_CLOUDWATCH_NAMESPACE") or "MirrorScope",
                  log_group=env.get("MIRRORSCOPE_CLOUDWATCH_LOG_GROUP") or "/mirrorscope/alerts",
                  endpoint_url=env.get("MIRRORSCOPE_CLOUDWATCH_ENDPOINT_URL") or None,
                  region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None)
        kw.update({k: v for k, v in over.items() if v is not None})
        return cls(**kw)


class CloudWatchSink:
    """Aggregates metrics and queues alert events; ``flush`` sends both (raising on failure,
    so the caller does not commit)."""

    def __init__(self, settings: CloudWatchSettings, cw_client=None, logs_client=None,
                 clock=time.time):
        self.s = settings
        if cw_client is None or (logs_client is None and settings.log_group):
            import boto3
            from botocore.config import Config
            cfg = Config(connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
                         retries={"mode": "standard", "total_max_attempts": settings.max_attempts})
            kw = dict(endpoint_url=settings.endpoint_url, region_name=settings.region, config=cfg)
            cw_client = cw_client or boto3.client("cloudwatch", **kw)
            logs_client = logs_client or boto3.client("logs", **kw)
        self.cw = cw_client
        self.logs = logs_client
        self.clock = clock
        self.metrics = MetricAggregator()
        self._events: list[dict] = []
        self.stream = settings.log_stream or f"{socket.gethostname()}-{os.getpid()}"
        self._stream_ready = False
        self.sent_datums = 0
        self.sent_events = 0
        self._last_flush = clock()

    def add(self, kind: str, records: list) -> None:
        self.metrics.add(kind, records)
        if kind == "alerts" and self.s.log_group:
            now_ms = int(self.clock() * 1000)
            self._events.extend(alert_event(a, now_ms) for a in records)

    def due(self) -> bool:
        return self.clock() - self._last_flush >= self.s.flush_interval_s

    def _ensure_stream(self) -> None:
        if self._stream_ready:
            return
        try:
            self.logs.create_log_stream(logGroupName=self.s.log_group, logStreamName=self.stream)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass
        self._stream_ready = True

    def flush(self) -> None:
        """Send what was gathered. On an exception nothing is lost from memory: metrics and
        events not yet sent stay queued for the next flush."""
        self._last_flush = self.clock()
        if self.metrics:
            datums = self.metrics.take(self.clock())
            pending = metric_batches(datums)
            while pending:
                try:
                    self.cw.put_metric_data(Namespace=self.s.namespace, MetricData=pending[0])
                except Exception:
                    for d in (x for b in pending for x in b):  # put the unsent sums back
                        dims = tuple((x["Name"], x["Value"]) for x in d.get("Dimensions", ()))
                        self.metrics._add(d["MetricName"], dims, d["Value"], d["Unit"])
                    raise
                self.sent_datums += len(pending.pop(0))
        if self._events:
            self._ensure_stream()
            batches = log_event_batches(self._events)
            self._events = []
            while batches:
                try:
                    self.logs.put_log_events(logGroupName=self.s.log_group,
                                             logStreamName=self.stream, logEvents=batches[0])
                except Exception:
                    self._events = [e for b in batches for e in b]
                    raise
                self.sent_events += len(batches.pop(0))

    def close(self) -> None:
        self.flush()


class CloudWatchOutputs:
    """Same interface as embedded.LocalOutputs: embedded mode's results to CloudWatch."""

    def __init__(self, settings: CloudWatchSettings, cw_client=None, logs_client=None):
        self.sink = CloudWatchSink(settings, cw_client, logs_client)
        self.failed = False

    def write(self, results) -> None:
        for kind, recs in records_of(results):
            if recs:
                self.sink.add(kind.name, recs)
        if self.sink.due():
            try:
                self.sink.flush()
            except Exception as exc:  # kept for the next flush; the analysis goes on
                log.warning("CloudWatch flush failed (retried at the next one): %s", exc)

    def close(self) -> dict[str, str]:
        try:
            self.sink.close()
        except Exception as exc:
            log.error("CloudWatch: the last flush failed, its metrics and events are lost: %s", exc)
            self.failed = True
        out = {"cloudwatch_metrics": f"cloudwatch:{self.sink.s.namespace}"}
        if self.sink.s.log_group:
            out["cloudwatch_logs"] = f"logs:{self.sink.s.log_group}/{self.stream_name}"
        return out

    @property
    def stream_name(self) -> str:
        return self.sink.stream
