"""The flow table: packet records in, flow records out. Plain synchronous Python, no I/O.

Time is capture time (the packets' own timestamps), never the wall clock, so the same packets
give the same flow records whether they are read from a file in one go or arrive through a
broker in pieces: every timeout decision for a flow is taken when its next packet, or a later
``expire(now)``, shows the deadline has passed.

A flow ends
- on FIN from both sides, or RST: after ``close_linger`` more seconds, so the last ACKs and
  retransmissions still count in it (a new SYN on the same ports starts a new flow at once);
- after ``idle_timeout`` seconds without a packet;
- when a packet comes ``active_timeout`` seconds or more after the record's first packet: the
  record is reported (``active``) and the packet starts the next one (VPC Flow Logs aggregate
  the same way, over a 1 or 10 minute interval). Only a packet proves the flow went on, so a
  flow that falls silent is not split at the boundary: it ends ``idle`` (with one record, as
  Zeek's conn.log has it) when its idle timeout passes, or is split when its next packet
  comes. ``active`` therefore always means "continued in the next record";
- at the end of input (``flush``).
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, fields
from operator import attrgetter

import msgspec

from collectors.flowkey import community_id, flow_id, flow_key, ip_text
from schemas.records import FlowRecord, PacketRecord
from stream_app.core import tcpstate
from stream_app.core.tcphealth import health_fields, restart_health
from stream_app.core.tcphealth import segment as health_segment
from stream_app.core.l7 import L7, FastHttp
from stream_app.core.protocols import port_guess

NS = 1_000_000_000
TCP, UDP, SCTP = 6, 17, 132
SYN, ACK, RST, FIN = 0x02, 0x10, 0x04, 0x01
_WELL_KNOWN = 1024
# History letters of every segment kind, indexed (flags << 2 | is_orig << 1 | has_data).
_LETTERS = [
    (lambda s, orig: s if orig else s.lower())(tcpstate.letters(i >> 2, i & 1), (i >> 1) & 1)
    for i in range(256 << 2)
]


@dataclass(slots=True)
class FlowConfig:
    idle_timeout: float = 15.0
    """Seconds without a packet after which a flow ends (softflowd's and IPFIX's usual 15 s):
    UDP, ICMP, other protocols and TCP connection attempts nobody answered."""
    tcp_idle_timeout: float = 300.0
    """The same for TCP connections both sides have spoken on (Zeek's tcp_inactivity_timeout):
    an idle keep-alive connection is still one connection, and its HTTP state lives on.
    Long flows are still split every active_timeout."""
    active_timeout: float = 60.0
    """Seconds after which a long flow is reported and continued in a new record (at its
    first packet past them): VPC Flow Logs' shortest aggregation interval."""
    close_linger: float = 5.0
    """Seconds a flow stays open after FIN/FIN or RST to collect the last packets (Zeek's
    tcp_close_delay)."""
    max_flows: int = 1_000_000
    """Flows held at once (about 2 KB each in RSS, more with HTTP state; docs/robustness.md).
    A new flow past it ends the flow started longest ago first (end_reason "evicted", counted
    in stats["flows_evicted"]): a flood of distinct flows costs bounded memory, never a crash."""
    tcp_health: bool = True
    """Count TCP health (tcphealth.py) on every TCP flow; off leaves those fields null (the
    benchmark's baseline for what they cost)."""


@dataclass(slots=True)
class Flow:
    """Mutable state of one flow. ``orig_fwd`` says whether the originator is the key's first
    endpoint; packets are oriented by comparing their own orientation with it."""

    key: tuple
    orig_fwd: bool
    vni: int | None
    mirror_src: bytes | None
    ip_version: int
    proto: int
    orig_addr: bytes
    orig_port: int
    resp_addr: bytes
    resp_port: int
    first_ns: int
    last_ns: int
    orig_pkts: int = 0
    orig_bytes: int = 0
    resp_pkts: int = 0
    resp_bytes: int = 0
    orig_data: int = 0
    resp_data: int = 0
    tcp_flags: int = 0
    history: str = ""
    orig_state: int = tcpstate.INACTIVE
    resp_state: int = tcpstate.INACTIVE
    closing_ns: int = 0
    close_reason: str = ""
    truncated_pkts: int = 0
    fragment_pkts: int = 0
    direction: str | None = None
    app_proto: str | None = None
    memo: set = field(default_factory=set)
    """TCP segment kinds (flags, direction, data) applied since the states last changed."""
    l7: object = False
    """Application analysis: None = not decided yet, False = none, else the analyzer."""
    isn_orig: int | None = None
    isn_resp: int | None = None
    l7_tries: int = 0
    l7_held: object = None
    """The client's first data segment while the flow's protocol is undecided."""
    conn_first_ns: int = 0
    """First packet of the connection (first_ns restarts at each active-timeout split)."""
    cid: str | None = None
    idle_ns: int = 0
    """This flow's idle timeout: longer once a TCP connection is answered."""

    texts: tuple[str, str] | None = None
    conn_uid: str | None = None

    # TCP health (tcphealth.py), plain ints so a flow's state stays plain data. Per direction
    # (o_ originator, r_ responder): the sequence number just past the highest byte seen
    # (None until that direction's first segment), the last acknowledgment it sent, and one
    # open hole [glo, ghi) with ``gap`` of its bytes not seen yet (0: none open).
    o_nxt: int | None = None
    r_nxt: int | None = None
    o_ack: int | None = None
    r_ack: int | None = None
    o_glo: int = 0
    o_ghi: int = 0
    o_gap: int = 0
    r_glo: int = 0
    r_ghi: int = 0
    r_gap: int = 0
    # The record's counters (start over at an active-timeout split, as orig_pkts).
    orig_retx_pkts: int = 0
    orig_retx_bytes: int = 0
    resp_retx_pkts: int = 0
    resp_retx_bytes: int = 0
    orig_ooo: int = 0
    resp_ooo: int = 0
    orig_zw: int = 0
    resp_zw: int = 0
    missed: int = 0
    # Handshake times (ns): the last SYN before the SYN-ACK, the last SYN-ACK before the ACK,
    # and the two round trips once seen (only on the record that holds the handshake).
    syn_ns: int = 0
    synack_ns: int = 0
    hs_seq: int = 0
    """The originator's sequence number the SYN-ACK acknowledged (its handshake ACK's)."""
    rtt_resp_ns: int | None = None
    rtt_orig_ns: int | None = None

    def conn_uid_cache(self) -> str:
        """Deterministic id of the connection (not of one flow record: active-timeout splits
        share it); HTTP transaction ids are this id and their depth."""
        if self.conn_uid is None:
            self.conn_uid = flow_id(self.cid_cache(), self.vni, self.conn_first_ns)
        return self.conn_uid

    def addr_texts(self) -> tuple[str, str]:
        """The originator's and responder's addresses as text (computed once)."""
        if self.texts is None:
            self.texts = (ip_text(self.orig_addr), ip_text(self.resp_addr))
        return self.texts

    def to_state(self) -> FlowState:
        """The stored form of this flow (stream_app/state/codec.py); its analyzer's through
        the analyzer's own ``to_state``."""
        st = FlowState(*_FLOW_GET(self))
        a = self.l7
        if a is not None and a is not False:
            st.l7 = a.to_state()
        return st

    @classmethod
    def from_state(cls, st: FlowState, l7: L7 | None, analyzers: dict) -> Flow:
        """A flow from its stored form. ``l7``: the restoring table's engine (shared, never
        stored); ``analyzers``: state Struct type -> analyzer class, whose
        ``from_state(state, l7, flow)`` rebuilds the flow's analyzer."""
        f = cls(*msgspec.structs.astuple(st))
        a = st.l7
        if a is not None and a is not False:
            if l7 is None:
                raise ValueError("the flow's state holds application analysis, which this "
                                 "worker has turned off")
            f.l7 = analyzers[type(a)].from_state(a, l7, f)
        return f

    def cid_cache(self) -> str:
        if self.cid is None:
            self.cid = community_id(self.proto, self.orig_addr, self.resp_addr,
                                    self.orig_port, self.resp_port)
        return self.cid


@dataclass
class FlowTable:
    config: FlowConfig = field(default_factory=FlowConfig)
    l7: L7 | None = None
    """Application-layer analysis (HTTP) of TCP flows; None: flows only."""
    flows: dict = field(default_factory=OrderedDict)
    """key -> Flow, oldest first: evicting the oldest is O(1) (popitem), where deleting
    the first key of a plain dict degrades as deleted slots pile up at its front."""
    stats: Counter = field(default_factory=Counter)
    errors: list = field(default_factory=list)
    """The first few exceptions the flow boundary caught, as text (for logs and summaries)."""

    def __post_init__(self) -> None:
        c = self.config
        self._idle = int(c.idle_timeout * NS)
        self._tcp_idle = int(c.tcp_idle_timeout * NS)
        self._active = int(c.active_timeout * NS)
        self._linger = int(c.close_linger * NS)
        self._timers: list[tuple[int, int, tuple]] = []  # (deadline, tiebreak, key)
        self._tick = 0
        self.now_ns = 0
        self._max_flows = max(1, c.max_flows)

    # -- packets ----------------------------------------------------------------------------
    def add(self, r: PacketRecord) -> list[FlowRecord]:
        """Account one packet; returns the flow records it completed (usually none)."""
        return self.add_batch((r,))

    def add_batch(self, batch) -> list[FlowRecord]:
        """Account packets in order; returns the flow records they completed.

        Nothing raises out of here: a packet on which the table's own code fails is counted
        (stats["packet_errors"], its exception kept in ``errors``) and the batch goes on with
        the next packet, so one bad record never loses the others or the open flows."""
        out: list[FlowRecord] = []
        it = iter(batch)
        while True:
            try:
                self._add_batch(it, out)
                return out
            except Exception as exc:  # noqa: BLE001 - the flow boundary: count, never crash
                self.stats["packet_errors"] += 1
                self._note_error("packet", exc)

    def _note_error(self, where: str, exc: BaseException) -> None:
        if len(self.errors) < 10:
            self.errors.append(f"{where}: {type(exc).__name__}: {exc}"[:300])

    def _l7_failed(self, f: Flow, exc: BaseException) -> None:
        """The HTTP analysis of one flow raised: report what it had, tagged analyzer_error,
        and go on with the flow's packets and counts but no more L7 for it."""
        self.stats["l7_errors"] += 1
        self._note_error("l7", exc)
        try:
            self.l7.abandon(f)
        except Exception as exc2:  # noqa: BLE001
            self._note_error("l7", exc2)
        f.l7 = False
        f.l7_held = None

    def _l7_end(self, f: Flow) -> None:
        try:
            self.l7.flow_end(f)
        except Exception as exc:  # noqa: BLE001 - the flow boundary
            self._l7_failed(f, exc)

    def _add_batch(self, it, out: list[FlowRecord]) -> None:
        """The loop of add_batch, over an iterator so that it resumes after a failed packet.

        This is the per-packet hot path, so it binds everything to locals once per batch,
        builds the key of a port protocol inline, and lets a TCP segment that cannot change
        the connection's state (the same flags, direction and states as one already applied)
        skip the state machine."""
        flows_get = self.flows.get
        l7_undecided = self.l7.undecided if self.l7 is not None else None
        l7_udp = self.l7.udp if self.l7 is not None else None
        linger, active = self._linger, self._active
        health = self.config.tcp_health
        now = self.now_ns
        for r in it:
            ts = r.ts_ns
            if ts > now:
                now = ts
            proto = r.proto
            if proto == 1 or proto == 58:
                key, fwd = flow_key(r)
            else:
                src, dst = r.src, r.dst
                sp, dp = r.sport, r.dport
                if src < dst or (src == dst and sp <= dp):
                    key, fwd = (r.vni, proto, src, sp, dst, dp), True
                else:
                    key, fwd = (r.vni, proto, dst, dp, src, sp), False
            f = flows_get(key)
            if f is not None:
                if ts < f.last_ns:
                    # A capture clock stepping back (merged files, NTP): a flow's own time
                    # never goes back, so no duration is negative and no timer misfires.
                    ts = f.last_ns
                    if f.rtt_orig_ns is None:  # nor is a handshake timed across the step
                        f.syn_ns = f.synack_ns = -1
                        f.rtt_resp_ns = None
                if f.closing_ns:
                    if ts - f.closing_ns >= linger or (r.tcp_flags & (SYN | ACK)) == SYN:
                        self._end(f, f.close_reason, out)
                        f = None
                elif ts - f.last_ns >= f.idle_ns:
                    # Silent for the idle timeout: the flow ended, even if its record is
                    # older than the active timeout (nothing continued it).
                    self._end(f, "idle", out)
                    f = None
                elif ts - f.first_ns >= active:
                    # The flow went on past the active timeout: report, continue anew.
                    if f.orig_pkts or f.resp_pkts:  # (state saved by an older version
                        out.append(self._record(f, "active"))  # may hold an empty record)
                    self._restart(f, ts)
            if f is None:
                f = self._new(key, fwd, r, out)
            is_orig = fwd == f.orig_fwd
            plen = r.payload_len
            if is_orig:
                f.orig_pkts += 1
                f.orig_bytes += r.wire_len
                f.orig_data += plen
            else:
                f.resp_pkts += 1
                f.resp_bytes += r.wire_len
                f.resp_data += plen
            f.last_ns = ts
            if r.truncated or r.fragment:
                if r.truncated:
                    f.truncated_pkts += 1
                if r.fragment:
                    f.fragment_pkts += 1
            if proto == TCP:
                # TCP health: an in-order segment (the common case) is handled here;
                # anything else (a hole, a resent or late segment, SYN, RST, a zero window)
                # takes tcphealth.segment.
                seq = r.seq
                fl = r.tcp_flags
                if health:
                    # In order, ACK set, no SYN or RST, window open (FIN allowed: it takes
                    # one sequence number): only the direction's next sequence number and
                    # last acknowledgment move. Flags as literals (0x16: SYN|RST|ACK, 0x10:
                    # ACK, 1: FIN): constants cost less than globals here.
                    if is_orig:
                        if seq == f.o_nxt and fl & 0x16 == 0x10 and r.window:
                            f.o_ack = r.ack
                            if plen or fl & 1:
                                f.o_nxt = (seq + plen + (fl & 1)) & 0xFFFFFFFF
                        else:
                            health_segment(f, r, True, ts)
                    elif seq == f.r_nxt and fl & 0x16 == 0x10 and r.window:
                        f.r_ack = r.ack
                        if plen or fl & 1:
                            f.r_nxt = (seq + plen + (fl & 1)) & 0xFFFFFFFF
                    else:
                        health_segment(f, r, False, ts)
                a = f.l7
                if a is not False:
                    try:  # the flow boundary: hostile payload must not end the batch
                        if type(a) is FastHttp:
                            if plen or fl & 1:  # (it holds no out-of-order segment)
                                a.packet(r, is_orig)
                        elif a is None:
                            if plen or fl & SYN:  # (nothing else can decide a protocol)
                                l7_undecided(f, r, is_orig)
                        elif plen or a.orig.pending or a.resp.pending or a.waiting \
                                or fl & FIN:
                            # A pure ACK only matters while a hole or a reordered copy waits;
                            # a FIN says where its direction's bytes end.
                            a.packet(r, is_orig)
                    except Exception as exc:  # noqa: BLE001
                        self._l7_failed(f, exc)
                # A segment kind (flags, direction, data or not) already applied since the
                # endpoint states last changed changes nothing: skip the state machine.
                kind = (fl << 2) | (is_orig << 1) | (plen > 0)
                if kind not in f.memo:
                    self.now_ns = now
                    self._tcp(f, kind, ts, seq)
            elif proto == UDP:
                a = f.l7
                if a is not False:
                    try:  # the flow boundary, as for TCP
                        if a is None:
                            l7_udp(f, r, is_orig)
                        else:
                            a.packet(r, is_orig)
                    except Exception as exc:  # noqa: BLE001
                        self._l7_failed(f, exc)
                # Zeek's UDP analyzer: 'D' once the originator sent a datagram, 'd' once the
                # responder did (udp/UDP.cc CheckHistory), so a DNS exchange reads "Dd".
                if is_orig:
                    if "D" not in f.history:
                        f.history += "D"
                elif "d" not in f.history:
                    f.history += "d"
        self.now_ns = now

    def _new(self, key: tuple, fwd: bool, r: PacketRecord, out: list[FlowRecord]) -> Flow:
        # The sender of the first packet originates the flow, unless it looks like the answer:
        # a SYN-ACK, or (with no SYN seen) a packet from a well-known port to an ephemeral one.
        # Zeek flips the same way and marks it with '^'.
        flip = False
        if r.proto == TCP:
            fl = r.tcp_flags
            if fl & SYN:
                flip = bool(fl & ACK)
            else:
                flip = r.sport < _WELL_KNOWN <= r.dport
        elif r.proto in (UDP, SCTP):
            flip = r.sport < _WELL_KNOWN <= r.dport
        if flip:
            f = Flow(key, not fwd, r.vni, r.mirror_src, r.ip_version, r.proto,
                     r.dst, r.dport, r.src, r.sport, r.ts_ns, r.ts_ns, history="^")
            f.direction = _reverse_direction(r.direction)
        else:
            f = Flow(key, fwd, r.vni, r.mirror_src, r.ip_version, r.proto,
                     r.src, r.sport, r.dst, r.dport, r.ts_ns, r.ts_ns)
            f.direction = r.direction
        f.conn_first_ns = r.ts_ns
        f.idle_ns = self._idle
        if self.l7 is not None and (r.proto == TCP or r.proto == UDP and self.l7.udp_protocols):
            f.l7 = None
        if len(self.flows) >= self._max_flows:
            self._evict(out)
        self.flows[key] = f
        self.stats["flows_started"] += 1
        self._schedule(f.first_ns + self._idle, key)
        return f

    def _restart(self, f: Flow, ts: int) -> None:
        """Continue a long flow in a new record after an active timeout: counters start over,
        the TCP endpoint states carry on."""
        f.first_ns = ts
        f.orig_pkts = f.orig_bytes = f.resp_pkts = f.resp_bytes = 0
        f.orig_data = f.resp_data = f.tcp_flags = 0
        f.truncated_pkts = f.fragment_pkts = 0
        f.history = ""
        f.memo.clear()  # tcp_flags and history start over, so every segment kind counts again
        if f.proto == TCP:
            restart_health(f)

    def _tcp(self, f: Flow, kind: int, ts: int, seq: int) -> None:
        flags = kind >> 2
        f.tcp_flags |= flags
        if f.synack_ns > 0 and f.rtt_orig_ns is None and kind & 2 and flags & (SYN | ACK) == ACK:
            # The originator's first ACK after a SYN-ACK (a segment kind not applied since the
            # SYN-ACK changed the states, so it always comes here): the client-side RTT, if it
            # is the handshake's own (the sequence number the SYN-ACK acknowledged), not a
            # later segment after the capture missed that ACK.
            if seq == f.hs_seq:
                f.rtt_orig_ns = ts - f.synack_ns
        for ch in _LETTERS[kind]:
            if ch not in f.history:
                f.history += ch
        before = (f.orig_state, f.resp_state)
        if kind & 2:
            f.orig_state, f.resp_state = tcpstate.update(f.orig_state, f.resp_state, flags)
        else:
            f.resp_state, f.orig_state = tcpstate.update(f.resp_state, f.orig_state, flags)
        if (f.orig_state, f.resp_state) != before:
            if f.orig_pkts and f.resp_pkts:
                f.idle_ns = self._tcp_idle  # answered: a connection, not an attempt
            f.memo.clear()  # transitions depend on the states: every kind counts again
        elif not flags & (FIN | RST):  # these also start the close timer: never skipped
            f.memo.add(kind)
        if not f.closing_ns:
            if flags & RST:
                f.closing_ns, f.close_reason = ts, "rst"
                self._schedule(ts + self._linger, f.key)
            elif f.orig_state == tcpstate.CLOSED and f.resp_state == tcpstate.CLOSED:
                f.closing_ns, f.close_reason = ts, "fin"
                self._schedule(ts + self._linger, f.key)

    def adopt(self, flows: list[Flow], now_ns: int) -> None:
        """Take over flows restored from a store (another worker's partition state)."""
        for f in flows:
            self.flows[f.key] = f
            self._schedule(self._deadline(f), f.key)
        if now_ns > self.now_ns:
            self.now_ns = now_ns

    # -- time -------------------------------------------------------------------------------
    def _schedule(self, deadline: int, key: tuple) -> None:
        self._tick += 1
        heapq.heappush(self._timers, (deadline, self._tick, key))

    def _deadline(self, f: Flow) -> int:
        # The active timeout is no deadline: it splits a record at the next packet (add_batch).
        if f.closing_ns:
            return min(f.closing_ns + self._linger, f.last_ns + f.idle_ns)
        return f.last_ns + f.idle_ns

    def expire(self, now_ns: int | None = None) -> list[FlowRecord]:
        """End the flows whose deadline is at or before ``now_ns`` (default: the latest packet
        time seen). Deadlines are re-read lazily, so a packet never has to move a timer."""
        now = self.now_ns if now_ns is None else now_ns
        out: list[FlowRecord] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, key = heapq.heappop(timers)
            f = self.flows.get(key)
            if f is None:
                continue
            deadline = self._deadline(f)
            if deadline > now:
                self._schedule(deadline, key)
                continue
            if f.closing_ns:
                self._end(f, f.close_reason, out)
                continue
            self._end(f, "idle", out)
        return out

    def flush(self) -> list[FlowRecord]:
        """End every flow (end of input). Flows already past a deadline at the last packet's
        time end for that reason, as they would had a sweep run then."""
        out = self.expire()
        self._timers.clear()
        flows = self.flows
        self.stats["flows_ended"] += len(flows)
        # Oldest first, each flow dropped as its record is made: a million open flows and
        # their million records are never all in memory at once.
        while flows:
            _, f = flows.popitem(last=False)
            if f.l7:
                self._l7_end(f)
            if f.orig_pkts + f.resp_pkts:
                out.append(self._record(f, f.close_reason or "eof"))
        return out

    def _evict(self, out: list[FlowRecord]) -> None:
        """Make room for a new flow: end the one started longest ago (O(1))."""
        _, f = self.flows.popitem(last=False)
        self.stats["flows_evicted"] += 1
        self.stats["flows_ended"] += 1
        if f.l7:
            self._l7_end(f)
        if f.orig_pkts or f.resp_pkts:
            out.append(self._record(f, "evicted"))
        # Evicted flows leave their timers behind (skipped lazily when they come due), each
        # holding its key: past a quarter more than the live flows, rebuild the heap (O(n)
        # every n/4 evictions, so O(1) each) so that it stays bounded too.
        if len(self._timers) > len(self.flows) + len(self.flows) // 4 + 1024:
            self._timers = [(self._deadline(g), i, k) for i, (k, g) in
                            enumerate(self.flows.items())]
            heapq.heapify(self._timers)
            self._tick = len(self._timers)

    def _end(self, f: Flow, reason: str, out: list[FlowRecord]) -> None:
        del self.flows[f.key]
        if f.l7:
            self._l7_end(f)
        self.stats["flows_ended"] += 1
        if f.orig_pkts or f.resp_pkts:  # an active-timeout split may leave nothing to report
            out.append(self._record(f, reason))

    # -- records ----------------------------------------------------------------------------
    def _record(self, f: Flow, reason: str) -> FlowRecord:
        self.stats["flow_records"] += 1
        cid = f.cid_cache()
        src, dst = f.addr_texts()
        if f.proto == TCP:
            state = tcpstate.conn_state_tcp(f.orig_state, f.resp_state, f.history,
                                            f.orig_data, f.resp_data)
        else:
            state = tcpstate.conn_state_other(f.proto, f.orig_pkts, f.resp_pkts)
        app_proto, source = f.app_proto, "content"
        if app_proto is None:
            source = None
            if f.orig_data or f.resp_data:
                app_proto = port_guess(f.proto, f.resp_port, f.orig_port)
                if app_proto is not None:
                    source = "port"
        return FlowRecord(
            version=5, account_id=None, interface_id=None,
            srcaddr=src, dstaddr=dst, srcport=f.orig_port, dstport=f.resp_port, protocol=f.proto,
            packets=f.orig_pkts + f.resp_pkts, bytes=f.orig_bytes + f.resp_bytes,
            start=f.first_ns // NS, end=f.last_ns // NS, action=None, log_status="OK",
            vpc_id=None, subnet_id=None, instance_id=None, tcp_flags=f.tcp_flags,
            type="IPv4" if f.ip_version == 4 else "IPv6", pkt_srcaddr=src, pkt_dstaddr=dst,
            region=None, az_id=None, sublocation_type=None, sublocation_id=None,
            pkt_src_aws_service=None, pkt_dst_aws_service=None,
            flow_direction=f.direction, traffic_path=None,
            flow_id=flow_id(cid, f.vni, f.first_ns), community_id=cid, vni=f.vni,
            mirror_source=ip_text(f.mirror_src) if f.mirror_src else None,
            orig_pkts=f.orig_pkts, orig_bytes=f.orig_bytes,
            resp_pkts=f.resp_pkts, resp_bytes=f.resp_bytes,
            duration=(f.last_ns - f.first_ns) / NS, conn_state=state, history=f.history,
            app_proto=app_proto, end_reason=reason,
            truncated_pkts=f.truncated_pkts, fragment_pkts=f.fragment_pkts,
            start_time=round(f.first_ns / NS, 6), end_time=round(f.last_ns / NS, 6),
            app_proto_source=source,
            **(health_fields(f) if f.proto == TCP and self.config.tcp_health else _NO_HEALTH),
        )


class FlowState(msgspec.Struct, array_like=True, gc=False):
    """A Flow as stored (stream_app/state/codec.py): its fields in Flow's order, so that one
    C call reads them all off a flow. ``l7`` holds the analyzer's own state Struct (tagged
    with its protocol); the codec narrows its type to the union of the registered analyzers'
    ``State`` classes. New fields go at the end with a default, so older states still read."""

    key: tuple[int | None, int, bytes, int, bytes, int]
    orig_fwd: bool
    vni: int | None
    mirror_src: bytes | None
    ip_version: int
    proto: int
    orig_addr: bytes
    orig_port: int
    resp_addr: bytes
    resp_port: int
    first_ns: int
    last_ns: int
    orig_pkts: int
    orig_bytes: int
    resp_pkts: int
    resp_bytes: int
    orig_data: int
    resp_data: int
    tcp_flags: int
    history: str
    orig_state: int
    resp_state: int
    closing_ns: int
    close_reason: str
    truncated_pkts: int
    fragment_pkts: int
    direction: str | None
    app_proto: str | None
    memo: set[int]
    l7: object
    """None (undecided), False (none), or an analyzer's state."""
    isn_orig: int | None
    isn_resp: int | None
    l7_tries: int
    l7_held: list[tuple[PacketRecord, bool]] | None
    conn_first_ns: int
    cid: str | None
    idle_ns: int
    texts: tuple[str, str] | None
    conn_uid: str | None
    # TCP health (added after state version 2's first fixtures: defaults keep them readable)
    o_nxt: int | None = None
    r_nxt: int | None = None
    o_ack: int | None = None
    r_ack: int | None = None
    o_glo: int = 0
    o_ghi: int = 0
    o_gap: int = 0
    r_glo: int = 0
    r_ghi: int = 0
    r_gap: int = 0
    orig_retx_pkts: int = 0
    orig_retx_bytes: int = 0
    resp_retx_pkts: int = 0
    resp_retx_bytes: int = 0
    orig_ooo: int = 0
    resp_ooo: int = 0
    orig_zw: int = 0
    resp_zw: int = 0
    missed: int = 0
    syn_ns: int = 0
    synack_ns: int = 0
    hs_seq: int = 0
    rtt_resp_ns: int | None = None
    rtt_orig_ns: int | None = None


_FLOW_FIELDS = tuple(f.name for f in fields(Flow))
assert _FLOW_FIELDS == FlowState.__struct_fields__, "FlowState must list Flow's fields in order"
_FLOW_GET = attrgetter(*_FLOW_FIELDS)
_NO_HEALTH: dict = {}  # other protocols: the TCP health fields keep their null defaults


def _reverse_direction(d: str | None) -> str | None:
    return {"egress": "ingress", "ingress": "egress"}.get(d) if d else None
