"""Detectors: flow and HTTP records in, alerts out. Plain synchronous Python, no I/O.

The detectors read the core's *records* (flow records when a flow ends, HTTP transactions),
never packets, so they add no work to the flow table's per-packet hot path. Time is capture
time (the records' own timestamps): the same input always gives the same alerts and ids.

Windowed, per-source state lives behind :class:`DetectorState`. A scan's probes are different
flows, so in distributed mode they land in different partitions and workers; the per-source
view must therefore be keyed by the *source*, not the flow, in a store every worker shares.
The operations are chosen so that each maps onto one Redis command:

    add_distinct  PFADD + PFCOUNT (HyperLogLog)      incr      INCRBY + EXPIREAT
    top_incr      ZINCRBY + ZREMRANGEBYRANK           times     ZADD + ZREMRANGEBYRANK
    get / put     GET / SET EXAT                      once      SET NX EXAT

Only the in-memory implementation exists (embedded mode; one process sees everything).
Every key carries an expiry (its window's end plus lateness), and the store is capped:
past ``max_keys`` the oldest key is evicted, past ``max_members`` a set stops growing; both
are counted in ``stats``.

Docs: docs/detectors/ (one page per detector: what it catches, thresholds, blind spots).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, OrderedDict
from operator import attrgetter
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote_plus

from schemas.records import Alert, FlowRecord, HttpTransaction
from stream_app.core.detectors_dns import DETECTORS as DNS_DETECTORS
from stream_app.core.detectors_dns import DnsTunnelConfig, NxdomainStormConfig
from stream_app.core.detectors_tls import TLS_DETECTORS, RareFingerprintConfig, TlsCertConfig
from stream_app.core.redact import DEFAULT as DEFAULT_REDACT
from stream_app.core.redact import uri_digest

TCP, UDP, ICMP = 6, 17, 1
MAX_TARGETS = 20


# -- state ------------------------------------------------------------------------------------
class DetectorState(Protocol):
    """The shared, windowed state the detectors keep. ``exp`` is the capture time (Unix
    seconds) after which a key may be dropped."""

    def add_distinct(self, key: tuple, member, exp: float) -> int: ...
    def incr(self, key: tuple, n: int, exp: float) -> int: ...
    def top_incr(self, key: tuple, member, n: int, k: int, exp: float) -> dict: ...
    def times(self, key: tuple, t: float, keep: int, exp: float) -> list[float]: ...
    def get(self, key: tuple): ...
    def put(self, key: tuple, value, exp: float) -> None: ...
    def once(self, key: tuple, exp: float, now: float) -> bool:
        """True (and the key set until ``exp``) unless it is set and not expired at ``now``."""
    def expire(self, now: float) -> None: ...


class InMemoryState:
    """DetectorState in a dict, bounded: ``max_keys`` keys (oldest evicted first), sets of at
    most ``max_members`` members (a set that is full stops growing; thresholds are far below)."""

    def __init__(self, max_keys: int = 200_000, max_members: int = 4096,
                 sweep_every: float = 10.0):
        self.max_keys = max_keys
        self.max_members = max_members
        self.sweep_every = sweep_every
        # key -> [exp, value], oldest first. An OrderedDict, because evicting the oldest key
        # of a plain dict (del d[next(iter(d))]) rescans the deleted slots at its front each
        # time: 200k SYN-only flows took 131 s with detectors against 4.1 s without.
        self._d: OrderedDict[tuple, list] = OrderedDict()
        self._next_sweep = 0.0
        self.stats: Counter = Counter()

    def __len__(self) -> int:
        return len(self._d)

    def _slot(self, key: tuple, exp: float, factory):
        e = self._d.get(key)
        if e is None:
            if len(self._d) >= self.max_keys:
                self._d.popitem(last=False)  # O(1)
                self.stats["evicted_keys"] += 1
            e = self._d[key] = [exp, factory()]
        elif exp > e[0]:
            e[0] = exp
        return e

    def add_distinct(self, key, member, exp):
        s = self._slot(key, exp, set)[1]
        if member not in s:
            if len(s) < self.max_members:
                s.add(member)
            else:
                self.stats["capped_members"] += 1
        return len(s)

    def incr(self, key, n, exp):
        e = self._slot(key, exp, int)
        e[1] += n
        return e[1]

    def top_incr(self, key, member, n, k, exp):
        c = self._slot(key, exp, dict)[1]
        c[member] = c.get(member, 0) + n
        if len(c) > k:  # keep the k largest (a sorted set trimmed by rank)
            del c[min(c, key=c.__getitem__)]
            self.stats["capped_members"] += 1
        return c

    def times(self, key, t, keep, exp):
        lst = self._slot(key, exp, list)[1]
        if t not in lst:
            lst.append(t)
            lst.sort()
            if len(lst) > keep:
                del lst[: len(lst) - keep]
        return lst

    def get(self, key):
        e = self._d.get(key)
        return None if e is None else e[1]

    def put(self, key, value, exp):
        self._slot(key, exp, lambda: None)[1] = value

    def once(self, key, exp, now):
        e = self._d.get(key)
        if e is not None:
            if e[0] > now:
                return False
            del self._d[key]
        self._slot(key, exp, lambda: True)
        return True

    def expire(self, now):
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.sweep_every
        dead = [k for k, e in self._d.items() if e[0] < now]
        for k in dead:
            del self._d[k]
        self.stats["expired_keys"] += len(dead)


# -- configuration ----------------------------------------------------------------------------
@dataclass
class PortScanConfig:
    window: float = 60.0
    """Seconds per (tumbling) window."""
    min_ports: int = 20
    """Distinct ports of one host probed by one source in a window. nmap's default scan tries
    1000; a client rarely opens more than a handful of services on one host a minute."""
    severity: str = "high"


@dataclass
class HostSweepConfig:
    window: float = 60.0
    min_hosts: int = 16
    """Distinct hosts one source probed on one port (or ICMP echo) in a window."""
    severity: str = "medium"


@dataclass
class SynFloodConfig:
    window: float = 10.0
    min_half_open: int = 200
    """Half-open attempts (SYN, never completed by the originator) to one host:port in a
    window: 20 a second, far above what retransmissions or a slow client make."""
    source_share: float = 0.5
    """The top source is named when it sent at least this share (else: spoofed/distributed)."""
    severity: str = "high"


@dataclass
class UnansweredConfig:
    window: float = 60.0
    min_attempts: int = 5
    """Failed attempts from one source to one host:port in a window, none of them answered.
    TCP retries a SYN 5-6 times before giving up, so one blocked connect() alone reaches it."""
    include_udp: bool = False
    """UDP 'no reply' is normal for syslog, statsd ...: off by default."""
    severity: str = "medium"


@dataclass
class VolumeSpikeConfig:
    bucket: float = 60.0
    """Seconds per bucket of a host's bytes (sent and received)."""
    min_history: int = 10
    """Buckets of baseline before the detector judges a host."""
    alpha: float = 0.1
    """Weight of the newest bucket in the moving mean/variance (EWMA)."""
    sigmas: float = 6.0
    factor: float = 10.0
    """A bucket alerts above max(min_bytes, mean + sigmas * std, factor * mean)."""
    min_bytes: int = 50_000_000
    severity: str = "medium"


@dataclass
class BeaconingConfig:
    min_events: int = 8
    """Connections from one source to one host:port before periodicity is judged."""
    keep: int = 16
    min_interval: float = 5.0
    max_interval: float = 3600.0
    max_jitter: float = 0.1
    """Coefficient of variation (std / mean) of the intervals at most this."""
    severity: str = "low"


@dataclass
class HttpAttackConfig:
    window: float = 60.0
    min_hits: int = 3
    """Requests matching an attack signature (traversal, injection, scanner UA) from one
    source in a window."""
    min_4xx: int = 20
    min_4xx_share: float = 0.5
    """Probing for paths: 4xx answers for at least min_4xx *different* URIs, and 4xx for this
    share of the source's transactions in the window (a client retrying one missing page, or a
    load test with a few 404s, is not an attack)."""
    severity: str = "high"


@dataclass
class DetectConfig:
    port_scan: PortScanConfig | None = field(default_factory=PortScanConfig)
    host_sweep: HostSweepConfig | None = field(default_factory=HostSweepConfig)
    syn_flood: SynFloodConfig | None = field(default_factory=SynFloodConfig)
    unanswered_connections: UnansweredConfig | None = field(default_factory=UnansweredConfig)
    volume_spike: VolumeSpikeConfig | None = field(default_factory=VolumeSpikeConfig)
    beaconing: BeaconingConfig | None = field(default_factory=BeaconingConfig)
    http_attack: HttpAttackConfig | None = field(default_factory=HttpAttackConfig)
    dns_tunnel: DnsTunnelConfig | None = field(default_factory=DnsTunnelConfig)
    nxdomain_storm: NxdomainStormConfig | None = field(default_factory=NxdomainStormConfig)
    tls_certificate: TlsCertConfig | None = field(default_factory=TlsCertConfig)
    rare_tls_fingerprint: RareFingerprintConfig | None = field(default_factory=RareFingerprintConfig)
    rate_limit: float = 300.0
    """At most one alert per (type, subject) per this many seconds of capture time."""
    lateness: float = 400.0
    """Seconds a window's state outlives its end: flow records arrive when flows end (up to
    the active timeout, 60 s, after they start) and may come out of order."""
    max_keys: int = 200_000
    max_members: int = 4096

    @classmethod
    def from_dict(cls, d: dict) -> DetectConfig:
        """From a JSON/YAML mapping: {"port_scan": {"min_ports": 30}, "beaconing": null, ...}."""
        kinds = {"port_scan": PortScanConfig, "host_sweep": HostSweepConfig,
                 "syn_flood": SynFloodConfig, "unanswered_connections": UnansweredConfig,
                 "volume_spike": VolumeSpikeConfig, "beaconing": BeaconingConfig,
                 "http_attack": HttpAttackConfig, "dns_tunnel": DnsTunnelConfig,
                 "nxdomain_storm": NxdomainStormConfig, "tls_certificate": TlsCertConfig,
                 "rare_tls_fingerprint": RareFingerprintConfig}
        kw = {}
        for k, v in d.items():
            if k in kinds:
                kw[k] = None if v is None or v is False else kinds[k](**(v or {}))
            elif k in ("rate_limit", "lateness", "max_keys", "max_members"):
                kw[k] = v
            else:
                raise ValueError(f"unknown detector setting {k!r}")
        return cls(**kw)


def alert_id(type_: str, subject: str | None, window_start: float) -> str:
    h = hashlib.blake2b(f"{type_}|{subject or ''}|{window_start:.3f}".encode(), digest_size=12)
    return h.hexdigest()


_TS = attrgetter("ts")
_SRC = attrgetter("srcaddr")
_URI_UA = attrgetter("uri", "user_agent")


def _wstart(t: float, w: float) -> float:
    return t - t % w


def _is_probe(f: FlowRecord) -> bool:
    """A TCP attempt that carried no data either way (a scan probe, refused or not), or a UDP
    datagram nobody answered."""
    if f.protocol == TCP:
        h = f.history
        return "D" not in h and "d" not in h and ("S" in h or "A" in h or "R" in h)
    if f.protocol == UDP:
        return f.resp_pkts == 0
    return False


def _half_open(f: FlowRecord) -> bool:
    """A SYN whose originator never completed the handshake (no ACK, no data)."""
    h = f.history
    return f.protocol == TCP and "S" in h and "A" not in h and "D" not in h


# Functions (engine, records) run on each batch's DNS and TLS records; filled by
# stream_app/core/detectors_dns.py and detectors_tls.py.
_DNS_DETECTORS: list = list(DNS_DETECTORS)
_TLS_DETECTORS: list = list(TLS_DETECTORS)


# -- the engine -------------------------------------------------------------------------------
@dataclass
class Detectors:
    config: DetectConfig = field(default_factory=DetectConfig)
    state: DetectorState | None = None
    stats: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        c = self.config
        if self.state is None:
            self.state = InMemoryState(c.max_keys, c.max_members)
        self._out: list[Alert] = []
        self._sig_cache: dict = {}
        self.now = 0.0

    # records in ------------------------------------------------------------------------------
    def observe(self, flows: list[FlowRecord], http: list[HttpTransaction],
                now: float | None = None, dns=(), tls=(), ssh=()) -> list[Alert]:
        c = self.config
        # Per-batch memo: a (key, member) already applied in this batch changes nothing, so
        # floods and scans (thousands of alike records) cost one state operation per key.
        self._seen = set()
        self._failed = {}
        flood: dict = {}
        volume: dict = {}
        for f in flows:
            t = f.end
            if t > self.now:
                self.now = t
            proto = f.protocol
            if proto == TCP or proto == UDP:
                probe = _is_probe(f)
                if probe:
                    self._port_scan(f)
                    self._host_sweep(f)
                if c.syn_flood is not None and proto == TCP and _half_open(f):
                    k = (f.dstaddr, f.dstport, f.start - f.start % c.syn_flood.window)
                    e = flood.get(k)
                    if e is None:
                        e = flood[k] = [Counter(), f]
                    e[0][f.srcaddr] += 1
                    e[1] = f
                if c.unanswered_connections is not None:
                    self._unanswered(f)
                if c.beaconing is not None and not probe:  # a beacon carries data
                    self._beaconing(f)
            elif proto == ICMP and f.srcport == 8:
                self._host_sweep(f)
            if c.volume_spike is not None:
                b = int(f.end // c.volume_spike.bucket)
                for host in (f.srcaddr, f.dstaddr):
                    k = (host, b)
                    e = volume.get(k)
                    if e is None:
                        volume[k] = [f.bytes, f]
                    else:
                        e[0] += f.bytes
                        e[1] = f
        for (base, kind), (k, last, exp, target) in self._failed.items():
            self._unanswered_failed(base, kind, k, last, exp, target)
        for (addr, port, ws), (srcs, last) in flood.items():
            self._syn_flood(addr, port, ws, srcs, last)
        for (host, b), (nbytes, last) in volume.items():
            self._volume_host(c.volume_spike, host, b, nbytes, last)
        if c.http_attack is not None:
            tx = self._http_batch(http) if http else {}
            for (src, ws), (count, exp, errors) in tx.items():
                self._http_errors(src, ws, count, exp, errors)
        # DNS and TLS detectors live in their own modules; each takes the engine (its config,
        # state and _emit) and the batch's records of its kind.
        for observe, recs in ((_DNS_DETECTORS, dns), (_TLS_DETECTORS, tls)):
            if recs:
                for fn in observe:
                    fn(self, recs)
        if now is not None and now > self.now:
            self.now = now
        self.state.expire(self.now)  # every key carries its own expiry (incl. lateness)
        out, self._out = self._out, []
        return out

    def _emit(self, type_: str, severity: str, source: str | None, targets: list[str],
              rec, ts: float, ws: float, we: float, evidence: dict, summary: str) -> None:
        subject = source if source is not None else (targets[0] if targets else None)
        aid = alert_id(type_, subject, ws)
        st = self.state
        if not st.once(("alert", aid), we + self.config.lateness, ts):
            self.stats["alerts_duplicate"] += 1
            return
        if not st.once(("rate", type_, subject), ts + self.config.rate_limit, ts):
            self.stats["alerts_rate_limited"] += 1
            return
        self.stats["alerts"] += 1
        self._out.append(Alert(
            alert_id=aid, ts=float(ts), type=type_, severity=severity, source=source,
            targets=targets[:MAX_TARGETS], vni=getattr(rec, "vni", None),
            interface_id=getattr(rec, "interface_id", None), window_start=float(ws),
            window_end=float(we), evidence={k: int(v) for k, v in evidence.items()},
            summary=DEFAULT_REDACT.redactor.text(summary)))

    # detectors -------------------------------------------------------------------------------
    def _port_scan(self, f: FlowRecord) -> None:
        c = self.config.port_scan
        if c is None:
            return
        ws = _wstart(f.start, c.window)
        key = ("ps", f.srcaddr, f.dstaddr, ws)
        member = (f.protocol, f.dstport)
        memo = (key, member)
        if memo in self._seen:
            return
        self._seen.add(memo)
        n = self.state.add_distinct(key, member, ws + c.window + self.config.lateness)
        if n == c.min_ports:
            proto = "TCP" if f.protocol == TCP else "UDP"
            self._emit("port_scan", c.severity, f.srcaddr, [f.dstaddr], f, f.end, ws,
                       ws + c.window, {"ports": n},
                       f"{f.srcaddr} probed {n}+ {proto} ports of {f.dstaddr} within "
                       f"{c.window:g} s (no data exchanged)")

    def _host_sweep(self, f: FlowRecord) -> None:
        c = self.config.host_sweep
        if c is None:
            return
        if f.protocol == ICMP:
            svc = "icmp/echo"
        else:
            svc = f"{'tcp' if f.protocol == TCP else 'udp'}/{f.dstport}"
        ws = _wstart(f.start, c.window)
        exp = ws + c.window + self.config.lateness
        key = ("hs", f.srcaddr, svc, ws)
        memo = (key, f.dstaddr)
        if memo in self._seen:
            return
        self._seen.add(memo)
        n = self.state.add_distinct(key, f.dstaddr, exp)
        hosts_key = ("hs-hosts", f.srcaddr, svc, ws)
        hosts = self.state.times(hosts_key, f.dstaddr, MAX_TARGETS, exp) \
            if n <= MAX_TARGETS else self.state.get(hosts_key) or []
        if n == c.min_hosts:
            self._emit("host_sweep", c.severity, f.srcaddr, [svc] + sorted(hosts)[:MAX_TARGETS - 1],
                       f, f.end, ws, ws + c.window, {"hosts": n},
                       f"{f.srcaddr} probed {n}+ hosts on {svc} within {c.window:g} s")

    def _syn_flood(self, addr: str, port: int, ws: float, srcs: Counter, f: FlowRecord) -> None:
        """One batch's half-open attempts to addr:port in the window starting at ws."""
        c = self.config.syn_flood
        exp = ws + c.window + self.config.lateness
        target = f"{addr}:{port}"
        k = sum(srcs.values())
        n = self.state.incr(("sf", target, ws), k, exp)
        top: dict = {}
        for src, cnt in srcs.items():
            top = self.state.top_incr(("sf-src", target, ws), src, cnt, 8, exp)
        if n - k < c.min_half_open <= n:
            src, cnt = max(top.items(), key=lambda kv: (kv[1], kv[0]))
            source = src if cnt >= c.source_share * n else None
            who = source or f"{len(top)}+ sources (spoofed or distributed)"
            self._emit("syn_flood", c.severity, source, [target], f, f.end, ws, ws + c.window,
                       {"half_open": n, "from_source": cnt if source else 0},
                       f"{n}+ half-open TCP connections to {target} within {c.window:g} s "
                       f"from {who}")

    def _unanswered(self, f: FlowRecord) -> None:
        c = self.config.unanswered_connections
        if f.protocol == UDP and not c.include_udp:
            return
        ws = _wstart(f.start, c.window)
        exp = ws + c.window + self.config.lateness
        target = f"{f.dstaddr}:{f.dstport}"
        base = (f.srcaddr, target, ws)
        h = f.history
        if f.protocol == TCP:
            if f.conn_state == "S0" and f.resp_pkts == 0:
                kind = "unanswered"
            elif f.conn_state == "REJ" and "h" not in h:
                kind = "refused"
            else:
                if f.resp_pkts:
                    self._answered(base, exp)
                return
        else:
            if f.resp_pkts:
                self._answered(base, exp)
                return
            kind = "unanswered"
        # judged after the whole batch (summed per target and kind), so an answered flow
        # anywhere in the batch counts
        e = self._failed.get((base, kind))
        if e is None:
            self._failed[(base, kind)] = [1, f, exp, target]
        else:
            e[0] += 1
            e[1] = f

    def _unanswered_failed(self, base: tuple, kind: str, k: int, f: FlowRecord, exp: float,
                           target: str) -> None:
        c = self.config.unanswered_connections
        ws = base[2]
        counts = self.state.top_incr(("ua",) + base, kind, k, 2, exp)
        n = sum(counts.values())
        if n - k < c.min_attempts <= n and not self.state.get(("ua-ok",) + base):
            un, ref = counts.get("unanswered", 0), counts.get("refused", 0)
            why = ("no reply at all: the answer is dropped on the way back or the request never "
                   "arrives (security group, NACL, route?)") if un >= ref else \
                "refused (RST): nothing listens on that port"
            self._emit("unanswered_connections", c.severity, f.srcaddr, [target], f, f.end, ws,
                       ws + c.window, {"attempts": n, "unanswered": un, "refused": ref},
                       f"{f.srcaddr} tried {target} {n}+ times within {c.window:g} s, never "
                       f"answered: {why}")

    def _answered(self, base: tuple, exp: float) -> None:
        memo = ("ua-ok",) + base
        if memo not in self._seen:
            self._seen.add(memo)
            self.state.put(memo, True, exp)

    def _volume_host(self, c: VolumeSpikeConfig, host: str, b: int, nbytes: int,
                     f: FlowRecord) -> None:
        """One batch's bytes of ``host`` in bucket ``b``."""
        key = ("vs", host)
        s = self.state.get(key)  # [bucket, bytes, mean, var, n, alerted]
        exp = (b + 1) * c.bucket + c.bucket * c.min_history * 4
        if s is None:
            s = [b, 0, 0.0, 0.0, 0, False]
        elif b > s[0]:
            # close the current bucket, then the empty ones in between (at most min_history)
            for v in [s[1]] + [0] * min(b - s[0] - 1, c.min_history):
                if s[4] == 0:
                    s[2], s[3] = float(v), 0.0
                else:
                    d = v - s[2]
                    s[2] += c.alpha * d
                    s[3] = (1 - c.alpha) * (s[3] + c.alpha * d * d)
                s[4] += 1
            s[0], s[1], s[5] = b, 0, False
        elif b < s[0]:  # late record: count it in the current bucket
            pass
        s[1] += nbytes
        if s[4] >= c.min_history and not s[5]:
            mean, std = s[2], math.sqrt(s[3])
            limit = max(c.min_bytes, mean + c.sigmas * std, c.factor * mean)
            if s[1] > limit:
                s[5] = True
                ws = s[0] * c.bucket
                self._emit("volume_spike", c.severity, host, [], f, f.end, ws, ws + c.bucket,
                           {"bytes": s[1], "baseline_bytes": int(mean), "limit_bytes": int(limit)},
                           f"{host} moved {s[1]:,} bytes in {c.bucket:g} s, {s[1] / max(mean, 1):.0f}x "
                           f"its moving baseline of {int(mean):,}")
        self.state.put(key, s, exp)

    def _beaconing(self, f: FlowRecord) -> None:
        c = self.config.beaconing
        target = f"{f.dstaddr}:{f.dstport}"
        exp = f.start + c.max_interval * 2
        ts = self.state.times(("bc", f.srcaddr, target), float(f.start), c.keep, exp)
        if len(ts) < c.min_events:
            return
        iv = [b - a for a, b in zip(ts, ts[1:])]
        mean = sum(iv) / len(iv)
        if not c.min_interval <= mean <= c.max_interval:
            return
        std = math.sqrt(sum((x - mean) ** 2 for x in iv) / len(iv))
        if std / mean <= c.max_jitter:
            ws = ts[0]
            self._emit("beaconing", c.severity, f.srcaddr, [target], f, f.end, ws, ts[-1],
                       {"connections": len(ts), "interval_ms": int(mean * 1000),
                        "jitter_ms": int(std * 1000)},
                       f"{f.srcaddr} connects to {target} every {mean:.1f} s "
                       f"(jitter {std:.2f} s, {len(ts)} connections)")

    def _http_batch(self, http: list[HttpTransaction]) -> dict:
        """The http_attack detector over a batch: the signatures (per transaction, _http) and
        the answered requests and 4xx per source and window, returned as
        {(src, window start): [answered, expiry, [4xx transactions]]}, first seen first.

        This runs for every transaction, and almost every batch is one window of traffic
        whose URIs and User-Agents are known and harmless: that case is counted with
        C-level builtins (Counter, map), any other batch one transaction at a time (_http)."""
        c = self.config
        window = c.http_attack.window
        ts = list(map(_TS, http))
        latest = max(self.now, max(ts))
        sig = self._sig_cache
        pairs = set(map(_URI_UA, http))
        lo, hi = min(ts), max(ts)
        if window == int(window) and lo - lo % window == hi - hi % window \
                and pairs <= sig.keys() and not any(sig[p] for p in pairs):
            # (an integral window: t - t % window is then exact, so one window at both ends
            # is one window for every transaction between)
            ws = lo - lo % window
            exp = ws + window + c.lateness
            answered = [h for h in http if h.status_code is not None]
            tx = {(src, ws): [n, exp, []] for src, n in Counter(map(_SRC, answered)).items()}
            for h in answered:
                if 400 <= h.status_code < 500:
                    tx[(h.srcaddr, ws)][2].append(h)
            self.now = latest
            return tx
        tx: dict = {}
        for h in http:
            if h.ts > self.now:
                self.now = h.ts
            self._http(h, tx)
        return tx

    def _http(self, h: HttpTransaction, tx: dict) -> None:
        c = self.config.http_attack
        src = h.srcaddr
        ws = _wstart(h.ts, c.window)
        exp = ws + c.window + self.config.lateness
        key = (h.uri, h.user_agent)
        cats = self._sig_cache.get(key)
        if cats is None:
            cats = http_signatures(h.uri, h.user_agent)
            if len(self._sig_cache) >= 8192:
                self._sig_cache.clear()
            self._sig_cache[key] = cats
        st = self.state
        if cats:
            counts = None
            for cat in cats:
                counts = st.top_incr(("ha", src, ws), cat, 1, 16, exp)
            hits = st.incr(("ha-n", src, ws), 1, exp)
            if hits == c.min_hits:
                target = f"{h.dstaddr}:{h.dstport}"
                self._emit("http_attack", c.severity, src, [target], h, h.ts, ws, ws + c.window,
                           {"requests": hits, **counts},
                           f"{src} sent {hits}+ attack-pattern HTTP requests to {target} "
                           f"({', '.join(sorted(counts))}) within {c.window:g} s")
        code = h.status_code
        if code is not None:
            # Answered requests per source and window are counted once per batch (one state
            # operation per source, not per request: this runs for every HTTP transaction).
            e = tx.get((src, ws))
            if e is None:
                e = tx[(src, ws)] = [0, exp, []]
            e[0] += 1
            if 400 <= code < 500:
                e[2].append(h)

    def _http_errors(self, src: str, ws: float, count: int, exp: float, errors: list) -> None:
        c = self.config.http_attack
        st = self.state
        n = st.incr(("ha-tx", src, ws), count, exp)
        for h in errors:
            memo = ("ha-4xx", src, ws, h.uri)
            if memo in self._seen:
                continue
            self._seen.add(memo)
            # the state (Redis, in distributed mode) holds a digest, never the URI itself
            e = st.add_distinct(("ha-4xx", src, ws), uri_digest(h.uri), exp)
            if e >= c.min_4xx and e >= c.min_4xx_share * n and \
                    st.once(("ha-4xx-fired", src, ws), exp, h.ts):
                target = f"{h.dstaddr}:{h.dstport}"
                self._emit("http_attack", c.severity, src, [target], h, h.ts, ws,
                           ws + c.window, {"requests": n, "client_error_uris": e},
                           f"{src} got 4xx answers for {e} different URIs in {n} HTTP "
                           f"requests to {target} within {c.window:g} s (probing for paths?)")
                return


# -- HTTP signatures --------------------------------------------------------------------------
SCANNER_UA = re.compile(
    r"nikto|sqlmap|nmap|masscan|zgrab|dirbuster|gobuster|wfuzz|ffuf|feroxbuster|wpscan|nuclei|"
    r"acunetix|netsparker|openvas|nessus|w3af|havij|hydra|arachni|skipfish|jaeles|whatweb|"
    r"zmeu|morfeus|qualys|burpcollaborator|commix|xsstrike", re.I)
TRAVERSAL = re.compile(r"(?:\.\.[/\\])|(?:[/\\]\.\.(?:$|[?#;]))|/etc/(?:passwd|shadow|hosts)|"
                       r"(?:c:|%systemroot%)[/\\]windows|/proc/self/|boot\.ini|\\\\\.\.", re.I)
SQLI = re.compile(r"\bunion\b.{0,40}\bselect\b|\bselect\b.{1,100}\bfrom\b|"
                  r"'\s*(?:or|and)\s*'?\d*'?\s*=\s*'?\d|\bor\s+1\s*=\s*1|"
                  r"\b(?:sleep|benchmark|pg_sleep|waitfor\s+delay)\s*\(|information_schema|"
                  r"(?:'|\")\s*;?\s*--|;\s*drop\s+table|\bxp_cmdshell\b", re.I)
SHELL = re.compile(r"(?:[;|`]|\$\(|&&)\s*(?:cat|ls|id|whoami|uname|wget|curl|nc|ncat|bash|sh|"
                   r"python\d?|perl|chmod|rm|echo|ping|sleep)\b|/bin/(?:ba)?sh\b|"
                   r"\$\{jndi:|\$\{ifs\}|cmd\.exe|powershell", re.I)


_PLAIN_URI = re.compile(r"[A-Za-z0-9/_=&?-]*(?:\.[A-Za-z0-9_=&?-][A-Za-z0-9/_=&?-]*)*")
_PLAIN_SUSPECT = re.compile(r"/etc/|/bin/|/proc/|boot\.ini|windows|information_schema|xp_cmdshell|"
                            r"powershell|cmd\.exe", re.I)


def http_signatures(uri: str | None, user_agent: str | None) -> list[str]:
    """The attack categories an HTTP request matches (URI decoded twice, as double encoding
    is a classic evasion)."""
    out = []
    if user_agent and SCANNER_UA.search(user_agent):
        out.append("scanner_user_agent")
    if uri and _PLAIN_URI.fullmatch(uri) and not _PLAIN_SUSPECT.search(uri):
        return out  # letters, digits, single dots, / _ = & ? -: nothing to look at
    if uri:
        u = uri if "%" not in uri and "+" not in uri else unquote_plus(unquote_plus(uri))
        if TRAVERSAL.search(u):
            out.append("path_traversal")
        if SQLI.search(u):
            out.append("sql_injection")
        if SHELL.search(u):
            out.append("shell_injection")
    return out
