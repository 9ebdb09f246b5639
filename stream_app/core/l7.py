"""Application-layer analysis attached to TCP flows: deciding which flows carry HTTP, and
turning their transactions into HttpTransaction records.

HTTP is recognised by its bytes, on any port: a flow is analysed when the first bytes of
either side start an HTTP/1.x message. Those bytes are read across segments, so a client that
sends its request line a byte at a time (an evasion trick) is still recognised: while what
has come could still begin a request, the segments are held and the decision waits. A flow
picked up midstream gets a few segments to show a message start before it is left alone.

Requests and responses pair in order, and the mirror does not always deliver the two
directions in the order they happened: a request's copy can arrive after the response that
acknowledges it. TCP's ACK numbers tell the true order, so a data segment that acknowledges
bytes of the other direction not yet seen waits until they arrive (or are known lost), and
only then goes to the HTTP framer.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

import msgspec

from schemas.records import HttpTransaction, PacketRecord
from stream_app.core.http import (
    BODY,
    START,
    TUNNEL,
    _RESYNC_REQUEST,
    _RESYNC_RESPONSE,
    ConversationState,
    HttpConfig,
    HttpConversation,
    MessageStreamState,
    Txn,
    TxnState,
    _c_parse_head,
    looks_like_http,
    redact_auth,
    redact_cookie,
    request_start_verdict,
    response_start_verdict,
)
from stream_app.core.reassembly import (
    DEFAULT_BUFFER_CAP,
    Direction,
    DirectionState,
    ReassemblyStats,
)

NS = 1_000_000_000
FIN = 0x01
SYN = 0x02
ACK = 0x10
MIDSTREAM_TRIES = 8
MASK = 0xFFFFFFFF
HALF = 1 << 31
MAX_WAITING = 64
"""Segments that may wait for the other direction's bytes they acknowledge; past this the
other direction's missing bytes are declared a gap and the segments go on."""
MAX_WAIT_NS = 2 * NS
"""Capture time a segment may wait so: mirror copies arrive out of order by milliseconds; a
longer wait means the bytes are lost (or only one direction is mirrored)."""
MAX_HELD = 32
UDP_TRIES = 4
"""Datagrams of a UDP flow looked at before it is left unnamed by content."""
"""Segments held while the first bytes of a connection may still start an HTTP message."""


@dataclass
class L7Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    reassembly_cap: int = DEFAULT_BUFFER_CAP
    """Bytes of out-of-order data buffered per direction before the hole is declared a gap."""
    protocols: frozenset[str] = frozenset({"http", "tls", "ssh", "dns"})
    """The application protocols recognised by content and analysed (HTTP always is while
    application analysis is on at all; the others can be left out)."""


class HttpAnalyzerState(msgspec.Struct, tag="http", array_like=True, gc=False):
    """An HttpAnalyzer as stored (stream_app/state/codec.py); the L7 engine, its statistics
    and configuration are the restoring table's."""

    conv: ConversationState
    orig: DirectionState
    resp: DirectionState
    waiting: list[PacketRecord] | None
    wait_orig: bool
    fin_orig: int | None
    fin_resp: int | None


class HttpAnalyzer:
    """Reassembly of both directions plus the HTTP conversation of one TCP connection."""

    State = HttpAnalyzerState

    __slots__ = ("conv", "orig", "resp", "l7", "flow", "queued", "waiting", "wait_orig",
                 "fin_orig", "fin_resp")

    def __init__(self, l7: L7, flow, isn_orig, isn_resp, midstream: bool):
        config = l7.config
        self.l7 = l7
        self.flow = flow
        self.queued = False
        self.waiting: deque | None = None
        """Data segments of one direction (``wait_orig``) that acknowledge bytes of the other
        direction the capture has not delivered yet, in arrival order."""
        self.wait_orig = False
        self.fin_orig: int | None = None
        self.fin_resp: int | None = None
        """Where each direction's FIN put the end of its bytes: what the capture has not
        delivered before it by the end is a gap (a body ended by the close counts exactly)."""
        self.conv = HttpConversation(config.http)
        self.conv.midstream = midstream
        self.orig = Direction(self.conv.requests, config.reassembly_cap, l7.stats)
        self.resp = Direction(self.conv.responses, config.reassembly_cap, l7.stats)
        if isn_orig is not None:
            self.orig.syn(isn_orig)
        if isn_resp is not None:
            self.resp.syn(isn_resp)

    def to_state(self) -> HttpAnalyzerState:
        w = self.waiting
        return HttpAnalyzerState(self.conv.to_state(), self.orig.to_state(),
                                 self.resp.to_state(), list(w) if w is not None else None,
                                 self.wait_orig, self.fin_orig, self.fin_resp)

    @classmethod
    def from_state(cls, st: HttpAnalyzerState, l7: L7, flow) -> HttpAnalyzer:
        a = cls.__new__(cls)
        a.l7, a.flow = l7, flow
        a.conv = conv = HttpConversation.from_state(st.conv, l7.config.http)
        a.orig = Direction.from_state(st.orig, conv.requests, l7.stats)
        a.resp = Direction.from_state(st.resp, conv.responses, l7.stats)
        a.waiting = deque(st.waiting) if st.waiting is not None else None
        a.wait_orig, a.fin_orig, a.fin_resp = st.wait_orig, st.fin_orig, st.fin_resp
        # "queued" means "in this table's ready list": true again only by being put there.
        a.queued = bool(conv.done)
        if a.queued:
            l7.ready.append(a)
        return a

    def __setstate__(self, state) -> None:
        # Read only from version-1 (pickled) state, through the codec's restricted unpickler:
        # an analyzer pickled by a version without the newer slots restores with defaults.
        self.waiting, self.wait_orig, self.fin_orig, self.fin_resp = None, False, None, None
        for part in state if isinstance(state, tuple) else (state,):
            for k, v in (part or {}).items():
                setattr(self, k, v)

    def packet(self, r, is_orig: bool, may_wait: bool = True) -> None:
        """One segment of the connection (``may_wait`` False: one released from waiting)."""
        if self.waiting is not None and may_wait:
            self._while_waiting(r, is_orig)
            return
        if is_orig:
            d, peer = self.orig, self.resp
        else:
            d, peer = self.resp, self.orig
        flags = r.tcp_flags
        # The ACK speaks of what the sender had received before it sent this segment.
        if flags & ACK and peer.pending:
            peer.acked(r.ack, r.ts_ns)
        if flags & SYN:
            d.syn(r.seq)
        else:
            plen = r.payload_len
            if flags & FIN:
                if is_orig:
                    self.fin_orig = (r.seq + plen) & MASK
                else:
                    self.fin_resp = (r.seq + plen) & MASK
            if plen:
                nxt = peer.next_seq
                if may_wait and flags & ACK and nxt is not None and r.ack != nxt \
                        and _ahead(self._data_ack(r.ack, not is_orig), nxt):
                    # Sent after the other side's bytes up to r.ack arrived, which the capture
                    # has not delivered yet (the mirror reordered the copies): wait for them.
                    self.waiting = deque((r,))
                    self.wait_orig = is_orig
                    self.l7.ack_waits += 1
                    return
                payload = r.payload
                if r.seq == d.next_seq and len(payload) == plen and not d.pending:
                    # In order and whole: the common case, without the general machinery.
                    d.stats.segments += 1
                    d.next_seq = (d.next_seq + plen) & 0xFFFFFFFF
                    stream = d.consumer
                    if stream.state == BODY and plen < stream.remaining and stream.txn is not None:
                        # The middle of a body of known length: count it and go.
                        stream.remaining -= plen
                        if is_orig:
                            stream.txn.req_body += plen
                        else:
                            stream.txn.resp_body += plen
                    elif stream.state == START and not stream.buf:
                        stream.start(payload, r.ts_ns)
                    elif stream.state != TUNNEL:
                        stream._feed(payload, r.ts_ns)
                    else:
                        stream.data(payload, r.ts_ns)
                else:
                    d.segment(r.seq, payload, plen, r.ts_ns)
        if self.conv.done and not self.queued:
            # Records are made once per batch (L7.take), not at every completed exchange.
            self.queued = True
            self.l7.ready.append(self)

    def _while_waiting(self, r, is_orig: bool) -> None:
        w = self.waiting
        if r.ts_ns - w[0].ts_ns > MAX_WAIT_NS:
            self.flush_waiting()
            self.packet(r, is_orig)
        elif is_orig == self.wait_orig:
            w.append(r)  # behind the waiting ones: a direction's order is kept
            if len(w) > MAX_WAITING:
                self.flush_waiting()
        else:
            waited = self.orig if self.wait_orig else self.resp
            if r.payload_len and r.tcp_flags & ACK \
                    and _ahead(self._data_ack(r.ack, self.wait_orig), waited.next_seq):
                # Each side acknowledges data the other has not shown: bytes were lost, not
                # delayed. Declare them a gap and go on in arrival order.
                self.flush_waiting()
                self.packet(r, is_orig)
            else:
                self.packet(r, is_orig, False)
                self._release(r.ts_ns)

    def _release(self, ts: int) -> None:
        """Deliver the waiting segments whose acknowledged bytes have now been seen."""
        w = self.waiting
        peer = self.resp if self.wait_orig else self.orig
        while w:
            r = w[0]
            if peer.pending:
                peer.acked(r.ack, ts)
            if _ahead(self._data_ack(r.ack, not self.wait_orig), peer.next_seq):
                return
            w.popleft()
            self.packet(r, self.wait_orig, False)
        self.waiting = None

    def flush_waiting(self) -> None:
        """The bytes the waiting segments acknowledge never came: a gap in the other
        direction up to each one's ACK, then the segment."""
        w, self.waiting = self.waiting, None
        if not w:
            return
        peer = self.resp if self.wait_orig else self.orig
        self.l7.ack_gaps += 1
        for r in w:
            _skip_to(peer, self._data_ack(r.ack, not self.wait_orig), r.ts_ns)
            self.packet(r, self.wait_orig, False)

    def _data_ack(self, ack: int, peer_orig: bool) -> int:
        """The end of the peer's data that ``ack`` acknowledges: the FIN takes a sequence
        number of its own, which is no data."""
        fin = self.fin_orig if peer_orig else self.fin_resp
        return fin if fin is not None and ack == (fin + 1) & MASK else ack

    def finish(self, ts: int) -> list[Txn]:
        self.flush_waiting()
        if self.fin_orig is not None:
            _skip_to(self.orig, self.fin_orig, ts)
        if self.fin_resp is not None:
            _skip_to(self.resp, self.fin_resp, ts)
        self.orig.end(ts)
        self.resp.end(ts)
        return self.conv.finish()


class L7:
    """Per-table application-layer state: the decision per flow and the records made."""

    def __init__(self, config: L7Config | None = None):
        self.config = config or L7Config()
        self.stats = ReassemblyStats()
        self.out: list[HttpTransaction] = []
        self.ready: list[HttpAnalyzer] = []  # analyzers with completed exchanges
        self.http_flows = 0
        self.ack_waits = 0
        """Times a segment waited for the other direction's bytes it acknowledges."""
        self.ack_gaps = 0
        """Times those bytes never came (declared a gap)."""
        from stream_app.core.protocols import tcp_protocols, udp_protocols
        self.tcp_protocols = [p for p in tcp_protocols() if p.name in self.config.protocols]
        self.udp_protocols = [p for p in udp_protocols() if p.name in self.config.protocols]
        self.http_on = "http" in self.config.protocols
        self.flows_by_proto: dict[str, int] = {}
        """Flows whose protocol content decided, by protocol (http counted in http_flows)."""
        self.dns: list = []
        self.tls: list = []
        self.ssh: list = []
        """Records the other analyzers made since the last take_more()."""
        hc = self.config.http
        self._fast = None if FastHttp is None or not self.http_on else Context(
            self.ready, self._fast_bail, _fast_state, hc.redact.redactor,
            hc.keep_credentials, hc.max_pending)
        """What the C HTTP connections (stream_app/_fastconn.c) share; None: HTTP is
        analysed by HttpAnalyzer alone (the extension is not built, or FAST_HTTP is off)."""

    def _fast_bail(self, fa, r, is_orig: bool, rest) -> None:
        """A FastHttp met what only HttpAnalyzer does: go on in Python from its state, with
        the whole segment (``rest`` None) or the bytes of one direction from a message's
        start on (the C framer took what came before)."""
        a = self._materialize(fa)
        if rest is None:
            a.packet(r, is_orig)
            return
        (a.conv.requests if is_orig else a.conv.responses)._feed(rest, r.ts_ns)
        if a.conv.done and not a.queued:
            a.queued = True
            self.ready.append(a)

    def _materialize(self, fa) -> HttpAnalyzer:
        """The HttpAnalyzer equal to FastHttp ``fa``, in its place (the flow's analyzer, and
        its place in the ready list, so records keep their order)."""
        f = fa.flow
        parts = fa.parts()
        self.stats.segments += parts[-1]
        at = None
        if fa.queued:
            at = next(i for i, x in enumerate(self.ready) if x is fa)
        fa.release()
        a = HttpAnalyzer.from_state(_fast_state(parts), self, f)  # queues itself if done
        if at is not None:
            if a.queued:
                self.ready.pop()
                self.ready[at] = a
            else:
                del self.ready[at]
        f.l7 = a
        return a

    def undecided(self, f, r, is_orig: bool) -> None:
        """Decide whether the flow is HTTP from its first data: a request from the client, or
        (when the client's first bytes are malformed) a status line from the server. The
        first bytes are read across segments (held meanwhile, so that a request sent a byte
        at a time, or a malformed one, is still reported)."""
        flags = r.tcp_flags
        if flags & SYN:
            if is_orig:
                f.isn_orig = r.seq
            else:
                f.isn_resp = r.seq
            return
        if not r.payload_len:
            return
        if f.isn_orig is None and f.isn_resp is None:
            self._midstream(f, r, is_orig)
            return
        held = f.l7_held
        if held is None:
            f.l7_held = held = []
        elif not isinstance(held, list):  # one client record, as state saved before 2026-12
            f.l7_held = held = [(held, True)]
        held.append((r, is_orig))
        cbytes = _first_bytes(held, True, f.isn_orig)
        sbytes = _first_bytes(held, False, f.isn_resp)
        if self.http_on:
            client = _verdict(cbytes, True)
            server = _verdict(sbytes, False)
            if client or server:
                self._start(f, r, held)
                return
            # HTTP is ruled out when the server's first bytes are no status line, or the
            # client sent more after bytes that begin no request without an answer.
            undecided = not (server is False or (client is False and is_orig
                                                  and sum(o for _, o in held) > 1))
        else:
            undecided = False
        for p in self.tcp_protocols:
            c = p.client(cbytes) if cbytes is not None else None
            sv = p.server(sbytes) if sbytes is not None else None
            if c or sv:
                self._start_other(f, p, held)
                return
            if c is None and sv is None:  # neither side has ruled it out yet
                undecided = True
        if not undecided or len(held) >= MAX_HELD:
            f.l7 = False
            f.l7_held = None
        # else: the first bytes may still become a message (or the client's malformed
        # request may still be answered by a status line): wait.

    def _start_other(self, f, p, held) -> None:
        """Protocol ``p`` recognised by the held first bytes: hand them to its analyzer."""
        self.flows_by_proto[p.name] = self.flows_by_proto.get(p.name, 0) + 1
        f.app_proto = p.name
        f.l7_held = None
        if p.analyzer is None:
            f.l7 = False
            return
        a = p.analyzer(self, f, f.isn_orig, f.isn_resp, False)
        f.l7 = a
        for rec, o in held:
            d = a.orig if o else a.resp
            if d is not None and d.next_seq is None:
                d.next_seq = rec.seq
                d.midstream = True
            a.packet(rec, o)
            if f.l7 is not a:  # the analyzer finished with the held bytes already
                return

    def udp(self, f, r, is_orig: bool) -> None:
        """A datagram of a UDP flow whose protocol is not decided yet."""
        if r.payload_len:
            payload = r.payload
            for p in self.udp_protocols:
                if p.verdict(payload, is_orig, f):
                    self.flows_by_proto[p.name] = self.flows_by_proto.get(p.name, 0) + 1
                    f.app_proto = p.name
                    if p.analyzer is None:
                        f.l7 = False
                        return
                    f.l7 = a = p.analyzer(self, f)
                    a.packet(r, is_orig)
                    return
            f.l7_tries += 1
        if f.l7_tries >= UDP_TRIES or not self.udp_protocols:
            f.l7 = False

    def detach(self, f) -> None:
        """An analyzer is done with flow ``f`` (its records made): the rest of the flow is
        counted, not analysed."""
        f.l7 = False

    def _start(self, f, r, held) -> None:
        self.http_flows += 1
        f.app_proto = "http"
        if self._fast is not None:
            f.l7 = FastHttp(self._fast, f, f.isn_orig, f.isn_resp, self.config.reassembly_cap)
        else:
            f.l7 = HttpAnalyzer(self, f, f.isn_orig, f.isn_resp, False)
        f.l7_held = None
        for rec, o in held:
            a = f.l7  # (a FastHttp may hand over to an HttpAnalyzer on any segment)
            if type(a) is FastHttp:
                a.start_dir(o, rec.seq)
            else:
                d = a.orig if o else a.resp
                if d.next_seq is None:  # no SYN seen in this direction: start at its first data
                    d.next_seq = rec.seq
                    d.midstream = True
            a.packet(rec, o)  # completed exchanges are queued for take()

    def _midstream(self, f, r, is_orig: bool) -> None:
        """A connection picked up without its handshake: find a message start."""
        data = r.payload
        start = 0
        if not self.http_on:
            if _tls_record(data) and any(p.name == "tls" for p in self.tcp_protocols):
                self.flows_by_proto["tls"] = self.flows_by_proto.get("tls", 0) + 1
                f.app_proto = "tls"
                f.l7 = False
                return
            f.l7_tries += 1
            if f.l7_tries >= MIDSTREAM_TRIES:
                f.l7 = False
            return
        if not looks_like_http(data, is_orig):
            m = (_RESYNC_REQUEST if is_orig else _RESYNC_RESPONSE).search(data)
            if m is None:
                if _tls_record(data) and any(p.name == "tls" for p in self.tcp_protocols):
                    # TLS records mid-connection: the handshake was missed, the protocol is
                    # still plain from the record framing.
                    self.flows_by_proto["tls"] = self.flows_by_proto.get("tls", 0) + 1
                    f.app_proto = "tls"
                    f.l7 = False
                    return
                f.l7_tries += 1
                if f.l7_tries >= MIDSTREAM_TRIES:
                    f.l7 = False
                return
            start = m.start()
        self.http_flows += 1
        f.app_proto = "http"
        a = HttpAnalyzer(self, f, None, None, True)
        f.l7 = a
        d = a.orig if is_orig else a.resp
        d.next_seq = (r.seq + start) & MASK
        d.midstream = True
        d.segment((r.seq + start) & MASK, data[start:], r.payload_len - start, r.ts_ns)
        if a.conv.done:
            self.emit(f, a.conv.take())

    def flow_end(self, f) -> None:
        a = f.l7
        if a:
            if type(a) is FastHttp:
                segments = a.segments
                if a.finish(f.last_ns, self.out):
                    self.stats.segments += segments
                    f.l7 = False
                    return
                a = self._materialize(a)  # a gap before a FIN, or a head cut by the end
            if type(a) is HttpAnalyzer:
                self.emit(f, a.finish(f.last_ns))
            else:
                a.finish(f.last_ns)
            f.l7 = False

    def emit(self, f, txns: list[Txn]) -> None:
        if not txns:
            return
        cid = f.cid_cache()
        src, dst = f.addr_texts()
        conn = f.conn_uid_cache()
        vni, sp, dp, direction = f.vni, f.orig_port, f.resp_port, f.direction
        out = self.out
        for t in txns:
            has_req = t.method is not None
            resp_ts = t.resp_ts
            if resp_ts is not None and resp_ts < t.ts and has_req:
                # The request's copy came after its response's (the ACKs put them in order):
                # its capture time is late, so the latency is unknown, not negative.
                t.tag("reordered")
                resp_ts = None
            out.append(HttpTransaction(
                f"{conn}-{t.depth}",
                (t.ts if has_req else (resp_ts or t.ts)) / NS, cid, vni, src, sp, dst, dp,
                t.depth, t.method, t.host, t.uri, t.version, t.user_agent, t.referrer,
                t.status, t.reason, t.req_body, t.resp_body, t.req_ctype, t.resp_ctype,
                (resp_ts - t.ts) / NS if resp_ts is not None and has_req else None,
                t.tags, t.auth, t.proxy_auth, t.cookie, t.set_cookie, direction,
            ))

    def abandon(self, f) -> None:
        """The analysis of flow ``f`` raised (stream_app.core.flowtable's flow boundary):
        report the exchanges it held, tagged analyzer_error (one empty record when it held
        none, so the event shows in http.jsonl), and analyse the flow no further."""
        a = f.l7
        if not a:
            return
        if type(a) is FastHttp:
            a = self._materialize(a)
        if type(a) is not HttpAnalyzer:
            a.abandon()
            return
        conv = a.conv
        txns = list(conv.done)
        pending = list(conv.pending)
        conv.done = []
        conv.pending.clear()
        if not pending:
            pending = [Txn(f.last_ns, conv.depth + 1)]
        for t in pending:
            t.tag("analyzer_error")
        self.emit(f, txns + pending)

    def take(self) -> list[HttpTransaction]:
        for a in self.ready:
            if type(a) is FastHttp:
                a.take(self.out)
                continue
            a.queued = False
            if a.conv.done:
                self.emit(a.flow, a.conv.take())
        self.ready.clear()
        out, self.out = self.out, []
        return out

    def take_more(self) -> tuple[list, list, list]:
        """The DNS, TLS and SSH records made since the last call."""
        out = self.dns, self.tls, self.ssh
        self.dns, self.tls, self.ssh = [], [], []
        return out


def analyzer_classes() -> list[type]:
    """Every analyzer class a flow may hold: HttpAnalyzer and those stream_app/core/
    protocols.py names. Each has a ``State`` attribute (its msgspec Struct, tagged with the
    protocol's name); the flow codec (stream_app/state/codec.py) decodes a flow's analyzer as
    the union of these, so an analyzer listed in protocols.py needs no codec change."""
    from stream_app.core.protocols import tcp_protocols, udp_protocols
    out: list[type] = [HttpAnalyzer]
    for p in [*tcp_protocols(), *udp_protocols()]:
        if p.analyzer is not None and p.analyzer not in out:
            out.append(p.analyzer)
    return out


def _fast_state(parts) -> HttpAnalyzerState:
    """The HttpAnalyzerState of a FastHttp from its ``parts()`` (the layout is in
    stream_app/_fastconn.c, fast_parts): the C connection is stored, and handed over to an
    HttpAnalyzer, in the Python analyzer's own form."""
    txns, pending, done, (rq, rs), depth, (do, dr), fin_orig, fin_resp, _ = parts
    conv = ConversationState(
        [TxnState(*t) for t in txns], pending, done,
        MessageStreamState(*rq, (START, 0)), MessageStreamState(*rs, (START, 0)), depth,
        False, 0, 0, False, 0, False, False)
    return HttpAnalyzerState(conv, DirectionState(do[0], [], do[1], do[2]),
                             DirectionState(dr[0], [], dr[1], dr[2]), None, False,
                             fin_orig, fin_resp)


FAST_HTTP = os.environ.get("MIRRORSCOPE_FAST_HTTP", "1") != "0"
"""Whether HTTP connections start in C (stream_app/_fastconn.c) when it is built. The
equivalence tests turn it off (MIRRORSCOPE_FAST_HTTP=0) to run the Python reference."""
try:
    if not FAST_HTTP or _c_parse_head is None:
        raise ImportError("off")
    from stream_app._fastconn import Context, FastHttp, setup as _fast_setup
    _fast_setup(HttpTransaction, PacketRecord, redact_auth, redact_cookie)
except ImportError:  # not built, or turned off: HttpAnalyzer alone
    Context = FastHttp = None


def _ahead(ack: int, nxt: int | None) -> bool:
    """Whether ``ack`` acknowledges bytes past ``nxt`` (the next byte a direction expects)."""
    return nxt is not None and ((ack - nxt + HALF) & MASK) - HALF > 0


def _skip_to(d: Direction, ack: int, ts: int) -> None:
    """The peer acknowledged everything before ``ack``: what the capture has not delivered of
    it was received but not captured. Deliver what is buffered, and a gap for the rest."""
    if d.next_seq is None:
        return
    if d.pending:
        d.acked(ack, ts)
    hole = ((ack - d.next_seq + HALF) & MASK) - HALF
    if hole > 0:
        d.stats.gaps += 1
        d.stats.gap_bytes += hole
        d.next_seq = ack
        d.consumer.gap(hole, ts)


def _first_bytes(held, is_orig: bool, isn: int | None) -> bytes | None:
    """The contiguous first bytes of one direction among the held segments (from the SYN's
    sequence number when it was seen), or None when that direction sent nothing yet."""
    if len(held) == 1:  # the usual case: one segment so far
        r, o = held[0]
        if o != is_orig:
            return None
        return r.payload if isn is None or not (r.seq - isn - 1) & MASK else b""
    segs = sorted(((r.seq - (isn + 1 if isn is not None else 0)) & MASK, r.payload)
                  for r, o in held if o == is_orig)
    if not segs:
        return None
    base = 0 if isn is not None else segs[0][0]
    out = b""
    for off, payload in segs:
        off -= base
        if off > len(out):
            break  # a hole: what follows it cannot count yet
        out += payload[len(out) - off:]
    return out


def _tls_record(data: bytes) -> bool:
    """Whether ``data`` starts with a TLS record header (change_cipher_spec, alert, handshake
    or application_data of TLS 1.0-1.3 framing) whose length fits a record."""
    return (len(data) >= 5 and 20 <= data[0] <= 23 and data[1] == 3 and 1 <= data[2] <= 4
            and 0 < int.from_bytes(data[3:5], "big") <= 18432)


def _verdict(data: bytes | None, is_request: bool):
    if data is None:
        return None
    return (request_start_verdict if is_request else response_start_verdict)(data)
