"""Application-layer analysis attached to TCP flows: deciding which flows carry HTTP, and
turning their transactions into HttpTransaction records.

HTTP is recognised by its bytes, on any port: a flow is analysed when its first data segment
(of either side) starts an HTTP/1.x message. A flow picked up midstream gets a few segments
to show a message start before it is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.records import HttpTransaction
from stream_app.core.http import (
    BODY,
    START,
    TUNNEL,
    _RESYNC_REQUEST,
    _RESYNC_RESPONSE,
    HttpConfig,
    HttpConversation,
    Txn,
    looks_like_http,
)
from stream_app.core.reassembly import DEFAULT_BUFFER_CAP, Direction, ReassemblyStats

NS = 1_000_000_000
SYN = 0x02
ACK = 0x10
MIDSTREAM_TRIES = 8


@dataclass
class L7Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    reassembly_cap: int = DEFAULT_BUFFER_CAP
    """Bytes of out-of-order data buffered per direction before the hole is declared a gap."""


class HttpAnalyzer:
    """Reassembly of both directions plus the HTTP conversation of one TCP connection."""

    __slots__ = ("conv", "orig", "resp", "l7", "flow", "queued")

    def __init__(self, l7: L7, flow, isn_orig, isn_resp, midstream: bool):
        config = l7.config
        self.l7 = l7
        self.flow = flow
        self.queued = False
        self.conv = HttpConversation(config.http)
        self.conv.midstream = midstream
        self.orig = Direction(self.conv.requests, config.reassembly_cap, l7.stats)
        self.resp = Direction(self.conv.responses, config.reassembly_cap, l7.stats)
        if isn_orig is not None:
            self.orig.syn(isn_orig)
        if isn_resp is not None:
            self.resp.syn(isn_resp)

    def packet(self, r, is_orig: bool) -> None:
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
            if plen:
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

    def finish(self, ts: int) -> list[Txn]:
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

    def undecided(self, f, r, is_orig: bool) -> None:
        """Decide whether the flow is HTTP from its first data: a request from the client, or
        (when the client's first bytes are malformed) a status line from the server. The
        client's first segment is held meanwhile, so a malformed request is still reported."""
        flags = r.tcp_flags
        if flags & SYN:
            if is_orig:
                f.isn_orig = r.seq
            else:
                f.isn_resp = r.seq
            return
        if not r.payload_len:
            return
        data = r.payload
        midstream = f.isn_orig is None and f.isn_resp is None
        start = 0
        if looks_like_http(data, is_orig):
            pass
        elif is_orig and not midstream and f.l7_held is None:
            f.l7_held = r  # not HTTP-looking; wait for the server's first answer
            return
        elif midstream:
            m = (_RESYNC_REQUEST if is_orig else _RESYNC_RESPONSE).search(data)
            if m is None:
                f.l7_tries += 1
                if f.l7_tries >= MIDSTREAM_TRIES:
                    f.l7 = False
                    f.l7_held = None
                return
            start = m.start()
        else:
            f.l7 = False  # neither side's first data is HTTP
            f.l7_held = None
            return
        self.http_flows += 1
        f.app_proto = "http"
        a = HttpAnalyzer(self, f, f.isn_orig, f.isn_resp, midstream or start > 0)
        f.l7 = a
        held, f.l7_held = f.l7_held, None
        if held is not None:
            a.packet(held, True)
        d = a.orig if is_orig else a.resp
        if d.next_seq is None or (start and d.next_seq != r.seq):
            d.next_seq = (r.seq + start) & 0xFFFFFFFF
            d.midstream = True
        d.segment((r.seq + start) & 0xFFFFFFFF, data[start:], r.payload_len - start, r.ts_ns)
        if a.conv.done:
            self.emit(f, a.conv.take())

    def flow_end(self, f) -> None:
        a = f.l7
        if a:
            self.emit(f, a.finish(f.last_ns))
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
            a.queued = False
            if a.conv.done:
                self.emit(a.flow, a.conv.take())
        self.ready.clear()
        out, self.out = self.out, []
        return out
