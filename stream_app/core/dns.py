"""DNS over UDP and TCP: messages parsed, queries paired with responses, DnsTransaction records.

Parser: written by hand (RFC 1035 section 4), not dnspython or dpkt.dns. Measured on this
machine over the 36 000 UDP messages of the lab DNS capture (``bench/bench_dns.py
--parsers``, two runs): this parser 3.6-5.2 us per message, dpkt.dns.DNS 1.5x that,
dnspython's ``dns.message.from_wire`` 7-9x; and both libraries raise (a family of exceptions)
on a message whose later sections are cut, where we keep the question and the answers read
so far. Only the first question and the answer section are decoded (the authority and
additional sections are walked to check the framing), which is all the record holds.

Safety on arbitrary bytes: every read is bounds-checked; a compression pointer must point
strictly before the place it was read from (so a loop is impossible, RFC 1035 4.1.4 only
allows pointers to a prior occurrence) and a name is at most 255 bytes; a truncated or
inconsistent message yields what was read and the ``malformed`` tag. Nothing raises out of
``parse``.

Pairing: queries and responses by (transaction id, question name in lower case, qtype,
qclass) within the flow; a response without a question pairs by id alone. A query
retransmitted while pending is folded into the first (tagged ``retransmitted``; rtt from the
first copy, the time the client waited). A response with no pending query is a record tagged
``no_query``; a query still pending at the flow's end, ``no_response``. At most
MAX_PENDING queries wait per flow: past it the oldest is reported (``no_response``,
``pending_overflow``) and counted, so a query flood on one 5-tuple costs bounded memory.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

import msgspec

from schemas.records import DnsAnswer, DnsTransaction
from stream_app.core.reassembly import DEFAULT_BUFFER_CAP, Direction

NS = 1_000_000_000
MAX_PENDING = 256
"""Queries waiting for their response per flow."""
MAX_ANSWERS = 100
"""Answers kept per response (the rest counted by the ``answers_capped`` tag)."""
MAX_HOPS = 64
"""Compression pointers followed in one name (backwards-only makes loops impossible already;
this bounds the work of a long backward chain)."""
MAX_TCP_MSG = 65535

TYPE_NAMES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 12: "PTR", 13: "HINFO", 15: "MX",
    16: "TXT", 28: "AAAA", 33: "SRV", 35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG",
    47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 64: "SVCB", 65: "HTTPS", 99: "SPF", 252: "AXFR",
    251: "IXFR", 255: "ANY", 257: "CAA",
}
RCODE_NAMES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
}
_QCLASSES = frozenset({1, 3, 4, 254, 255})
_OPCODES = frozenset({0, 1, 2, 4, 5})
_PRINTABLE = frozenset(range(0x21, 0x7F)) - {ord("."), ord("\\")}
_UNSAFE = re.compile(rb"[^\x21-\x5b\x5d-\x7e]")
"""A byte a name's text must escape (not printable, or a backslash)."""


class Malformed(Exception):
    """Internal: an invalid name or record (never escapes this module)."""


class ShortRead(Malformed):
    """Internal: the message breaks off (a capture's snap length, a lost fragment)."""


def type_name(t: int) -> str:
    return TYPE_NAMES.get(t) or f"TYPE{t}"


def _label_text(b: bytes) -> str:
    if all(c in _PRINTABLE for c in b):
        return b.decode("ascii")
    # RFC 1035 5.1 presentation: \DDD for what is not printable, \. and \\ escaped.
    return "".join(chr(c) if c in _PRINTABLE else
                   ("\\" + chr(c) if c in (0x2E, 0x5C) else f"\\{c:03d}") for c in b)


def _txt_text(b: bytes) -> str:
    """A TXT string: printable ASCII (space included) as is, other bytes \\DDD."""
    if all(0x20 <= c < 0x7F and c != 0x5C for c in b):
        return b.decode("ascii")
    return "".join(chr(c) if 0x20 <= c < 0x7F and c != 0x5C else f"\\{c:03d}" for c in b)


def read_name(buf: bytes, off: int) -> tuple[str, int]:
    """The name at ``off`` as text (no trailing dot; the root is "."), and the offset after it
    in the message (after the first pointer, when compressed)."""
    labels = []
    total = 0
    end = None
    hops = 0
    n = len(buf)
    while True:
        if off >= n:
            raise ShortRead("name runs past the end")
        ln = buf[off]
        if ln == 0:
            if end is None:
                end = off + 1
            break
        kind = ln & 0xC0
        if kind == 0xC0:
            if off + 1 >= n:
                raise ShortRead("pointer runs past the end")
            ptr = ((ln & 0x3F) << 8) | buf[off + 1]
            if ptr >= off:
                raise Malformed("compression pointer forward or to itself")
            hops += 1
            if hops > MAX_HOPS:
                raise Malformed("too many compression pointers")
            if end is None:
                end = off + 2
            off = ptr
            continue
        if kind:
            raise Malformed("reserved label type")
        total += ln + 1
        if total > 255:
            raise Malformed("name too long")
        if off + 1 + ln > n:
            raise ShortRead("label past the end")
        labels.append(buf[off + 1:off + 1 + ln])
        off += 1 + ln
    if not labels:
        return ".", end
    raw = b".".join(labels)
    # The common case in two C-speed checks: printable, no backslash, no dot inside a label.
    if _UNSAFE.search(raw) is None and raw.count(b".") == len(labels) - 1:
        return raw.decode("ascii"), end
    return ".".join(_label_text(x) for x in labels), end


class Message(msgspec.Struct):
    """What one DNS message says (the parts the record holds)."""

    tid: int
    flags: int
    qname: str | None = None
    qtype: int | None = None
    qclass: int | None = None
    answers: list = msgspec.field(default_factory=list)
    malformed: bool = False
    short: bool = False
    """The bytes ended inside a section (a snap length), rather than breaking a rule."""
    extra: int = 0
    """Bytes after the last section the header declares."""
    capped: bool = False

    @property
    def response(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


def _rdata(buf: bytes, t: int, off: int, ln: int) -> str:
    end = off + ln
    rd = buf[off:end]
    if t == 1 and ln == 4:
        return f"{rd[0]}.{rd[1]}.{rd[2]}.{rd[3]}"
    if t == 28 and ln == 16:
        return str(ipaddress.IPv6Address(rd))
    if t in (2, 5, 12):
        name, after = read_name(buf, off)
        if after > end:
            raise Malformed("name past its record")
        return name
    if t == 15 and ln >= 3:
        name, after = read_name(buf, off + 2)
        if after > end:
            raise Malformed("name past its record")
        return f"{int.from_bytes(rd[:2], 'big')} {name}"
    if t == 16:
        parts = []
        i = 0
        while i < ln:
            sl = rd[i]
            if i + 1 + sl > ln:
                raise Malformed("TXT string past its record")
            parts.append(_txt_text(rd[i + 1:i + 1 + sl]))
            i += 1 + sl
        return "".join(parts)
    if t == 6:
        mname, o = read_name(buf, off)
        rname, o = read_name(buf, o)
        if o + 20 > end:
            raise Malformed("SOA past its record")
        nums = [int.from_bytes(buf[o + 4 * i:o + 4 * i + 4], "big") for i in range(5)]
        return " ".join([mname, rname] + [str(x) for x in nums])
    if t == 33 and ln >= 7:
        target, after = read_name(buf, off + 6)
        if after > end:
            raise Malformed("name past its record")
        p, w, port = (int.from_bytes(rd[i:i + 2], "big") for i in (0, 2, 4))
        return f"{p} {w} {port} {target}"
    return rd.hex()


def parse(buf: bytes) -> Message | None:
    """One DNS message; None when shorter than a header. A message that breaks off or breaks
    a rule after its header returns what was read, ``malformed`` set."""
    if len(buf) < 12:
        return None
    tid = (buf[0] << 8) | buf[1]
    m = Message(tid, (buf[2] << 8) | buf[3])
    qd = (buf[4] << 8) | buf[5]
    an = (buf[6] << 8) | buf[7]
    rest = ((buf[8] << 8) | buf[9]) + ((buf[10] << 8) | buf[11])
    off = 12
    try:
        for i in range(qd):
            name, off = read_name(buf, off)
            if off + 4 > len(buf):
                raise ShortRead("question past the end")
            if i == 0:
                m.qname = name
                m.qtype = (buf[off] << 8) | buf[off + 1]
                m.qclass = (buf[off + 2] << 8) | buf[off + 3]
            off += 4
        answers = m.answers
        for _ in range(an):
            name, off = read_name(buf, off)
            if off + 10 > len(buf):
                raise ShortRead("record past the end")
            t = (buf[off] << 8) | buf[off + 1]
            ttl = int.from_bytes(buf[off + 4:off + 8], "big")
            ln = (buf[off + 8] << 8) | buf[off + 9]
            off += 10
            if off + ln > len(buf):
                raise ShortRead("record data past the end")
            if len(answers) < MAX_ANSWERS:
                answers.append(DnsAnswer(name, type_name(t), ttl, _rdata(buf, t, off, ln)))
            else:
                m.capped = True
            off += ln
        # The authority and additional sections: walked (framing), not decoded.
        m.extra = len(buf) - _skip_records(buf, off, rest)
    except ShortRead:
        m.malformed = m.short = True
    except (Malformed, IndexError, ValueError):
        m.malformed = True
    return m


def _skip_records(buf: bytes, off: int, count: int) -> int:
    for _ in range(count):
        _, off = read_name(buf, off)
        if off + 10 > len(buf):
            raise ShortRead("record past the end")
        off += 10 + ((buf[off + 8] << 8) | buf[off + 9])
        if off > len(buf):
            raise ShortRead("record data past the end")
    return off


def _netbios(name: str) -> bool:
    """NetBIOS Name Service (UDP 137) speaks DNS's format with names of 32 letters A-P (RFC
    1002 first-level encoding): another protocol, not named dns."""
    first = name.split(".", 1)[0]
    return len(first) == 32 and all("A" <= c <= "P" for c in first.upper())


def _header_ok(buf: bytes) -> bool:
    """The 12-byte header of a plausible message (see ``plausible``)."""
    flags = (buf[2] << 8) | buf[3]
    if (flags >> 11) & 0xF not in _OPCODES or flags & 0x0040:  # the Z bit is zero
        return False
    qd, an, ns, ar = ((buf[i] << 8) | buf[i + 1] for i in (4, 6, 8, 10))
    if qd != 1:
        return False
    if not flags & 0x8000:
        # A query: no answers, no rcode, authority records only in an UPDATE (opcode 5).
        return not (an or (ns and (flags >> 11) & 0xF != 5) or ar > 2 or flags & 0xF)
    return an <= 1000 and ns <= 1000 and ar <= 1000


def plausible(buf: bytes, whole: bool = True) -> bool:
    """Whether ``buf`` is a DNS message, by content: a sane header, exactly one question that
    parses with a known class, and (``whole``) every section framed to the exact end of the
    buffer. Used to name a flow dns on any port, so it errs on the side of saying no."""
    if len(buf) < 17 or not _header_ok(buf):
        return False
    m = parse(buf)
    if m.qname is None or _netbios(m.qname) or (m.qclass & 0x7FFF) not in _QCLASSES:
        return False  # (0x7FFF: mDNS's unicast-response bit)
    if whole:
        if m.malformed:
            # Whole header and question, then the bytes end inside a declared record: a
            # message cut by the capture's snap length (the record is tagged malformed).
            return m.short
        if m.extra:
            return False
    _last[0], _last[1] = buf, m
    return True


_last: list = [None, None]
"""The message the last verdict parsed, so the analyzer it starts does not parse it again."""


def dns_udp_verdict(payload: bytes, is_orig: bool, flow) -> bool:
    return plausible(payload)


def _tcp_verdict(data: bytes, response: bool) -> bool | None:
    if len(data) < 2:
        return None
    ln = (data[0] << 8) | data[1]
    if ln < 17:
        return False
    msg = data[2:2 + ln]
    if len(msg) >= 4 and bool(msg[2] & 0x80) != response:
        return False
    if len(msg) < ln:
        if len(msg) >= 12 and not _header_ok(msg):
            return False
        # Decide on the header and question when they are there (a long response).
        if len(msg) < 64:
            return None
        return plausible(msg, whole=False)
    return plausible(msg)


def dns_tcp_client_verdict(data: bytes) -> bool | None:
    return _tcp_verdict(data, False)


def dns_tcp_server_verdict(data: bytes) -> bool | None:
    return _tcp_verdict(data, True)


# -- pairing ------------------------------------------------------------------------------------
class PendingQuery(msgspec.Struct, array_like=True):
    n: int
    ts_ns: int
    tid: int
    flags: int
    qname: str | None
    qtype: int | None
    qclass: int | None
    from_orig: bool
    tags: list[str]


class PairingState(msgspec.Struct, array_like=True):
    n: int
    pending: list[PendingQuery]


def _count(l7, name: str, k: int = 1) -> None:
    c = getattr(l7, "dns_stats", None)
    if c is None:
        c = l7.dns_stats = Counter()
    c[name] += k


class Pairing:
    """Queries waiting for responses in one flow, and the records made."""

    __slots__ = ("l7", "flow", "transport", "n", "pending")

    def __init__(self, l7, flow, transport: str):
        self.l7 = l7
        self.flow = flow
        self.transport = transport
        self.n = 0
        self.pending: dict[tuple, PendingQuery] = {}

    def message(self, buf: bytes, ts: int, is_orig: bool) -> None:
        if _last[0] is not None and _last[0] == buf:
            m = _last[1]
            _last[0] = _last[1] = None
        else:
            m = parse(buf)
        if m is None:
            _count(self.l7, "malformed")
            return
        if m.malformed:
            _count(self.l7, "malformed")
        if m.response:
            self._response(m, ts, is_orig)
        else:
            self._query(m, ts, is_orig)

    def _key(self, m) -> tuple:
        return (m.tid, (m.qname or "").lower(), m.qtype, m.qclass)

    def _query(self, m: Message, ts: int, is_orig: bool) -> None:
        key = self._key(m)
        p = self.pending.get(key)
        if p is not None:
            if "retransmitted" not in p.tags:
                p.tags.append("retransmitted")
            _count(self.l7, "retransmitted")
            return
        if len(self.pending) >= MAX_PENDING:
            old_key = next(iter(self.pending))
            old = self.pending.pop(old_key)
            old.tags.append("pending_overflow")
            _count(self.l7, "pending_overflow")
            self._emit(old, None, None)
        self.n += 1
        tags = ["malformed"] if m.malformed else []
        self.pending[key] = PendingQuery(self.n, ts, m.tid, m.flags, m.qname, m.qtype,
                                         m.qclass, is_orig, tags)

    def _response(self, m: Message, ts: int, is_orig: bool) -> None:
        p = self.pending.pop(self._key(m), None)
        if p is None and m.qname is None:
            for k, q in self.pending.items():  # no question to pair by: the id alone
                if q.tid == m.tid:
                    p = self.pending.pop(k)
                    break
        if p is None:
            self.n += 1
            p = PendingQuery(self.n, ts, m.tid, 0, m.qname, m.qtype, m.qclass, not is_orig,
                             ["no_query"])
            _count(self.l7, "no_query")
        self._emit(p, m, ts)

    def _emit(self, q: PendingQuery, r: Message | None, rts: int | None) -> None:
        f = self.flow
        a, b = f.addr_texts()
        if q.from_orig:
            src, sp, dst, dp = a, f.orig_port, b, f.resp_port
        else:
            src, sp, dst, dp = b, f.resp_port, a, f.orig_port
        tags = list(q.tags)
        if r is None:
            tags.append("no_response")
            rflags = 0
        else:
            rflags = r.flags
            if r.malformed and "malformed" not in tags:
                tags.append("malformed")
            if r.capped:
                tags.append("answers_capped")
        no_query = "no_query" in tags
        qflags = q.flags if not no_query else rflags
        qtype = q.qtype if q.qtype is not None else (r.qtype if r is not None else None)
        rcode = r.rcode if r is not None else None
        self.l7.dns.append(DnsTransaction(
            f"{f.conn_uid_cache()}-{q.n}", q.ts_ns / NS, f.cid_cache(), f.vni, src, sp, dst, dp,
            self.transport, q.tid, q.qname, q.qclass, qtype,
            type_name(qtype) if qtype is not None else None, rcode,
            RCODE_NAMES.get(rcode, f"RCODE{rcode}") if rcode is not None else None,
            bool(rflags & 0x0400), bool((rflags | qflags) & 0x0200), bool(qflags & 0x0100),
            bool(rflags & 0x0080), r.answers if r is not None else [],
            (rts - q.ts_ns) / NS if rts is not None and not no_query and rts >= q.ts_ns else None,
            tags, f.direction))

    def finish(self) -> None:
        pending, self.pending = self.pending, {}
        for q in pending.values():
            self._emit(q, None, None)

    def to_state(self) -> PairingState:
        return PairingState(self.n, list(self.pending.values()))

    def restore(self, st: PairingState) -> None:
        self.n = st.n
        self.pending = {(q.tid, (q.qname or "").lower(), q.qtype, q.qclass): q for q in st.pending}


# -- analyzers ----------------------------------------------------------------------------------
class DnsUdpState(msgspec.Struct, tag="dns_udp", array_like=True):
    pairing: PairingState


class DnsUdpAnalyzer:
    """DNS over UDP: each datagram one message."""

    __slots__ = ("pairing",)

    def __init__(self, l7, flow):
        self.pairing = Pairing(l7, flow, "udp")

    def packet(self, r, is_orig: bool) -> None:
        if r.payload_len:
            if len(r.payload) < r.payload_len:
                _count(self.pairing.l7, "truncated_capture")
            self.pairing.message(r.payload, r.ts_ns, is_orig)

    def finish(self, ts_ns: int) -> None:
        self.pairing.finish()

    def abandon(self) -> None:
        for q in self.pairing.pending.values():
            q.tags.append("analyzer_error")
        self.pairing.finish()

    def to_state(self) -> DnsUdpState:
        return DnsUdpState(self.pairing.to_state())

    @classmethod
    def from_state(cls, state: DnsUdpState, l7, flow) -> DnsUdpAnalyzer:
        a = cls(l7, flow)
        a.pairing.restore(state.pairing)
        return a


class TcpFramer:
    """One direction of a DNS-over-TCP connection: 2-byte length, then the message (RFC 1035
    4.2.2); a Direction's consumer. After a gap the framing is lost for good (a length field
    cannot be told from data), counted."""

    __slots__ = ("pairing", "is_orig", "buf", "lost", "ts")

    def __init__(self, pairing: Pairing, is_orig: bool):
        self.pairing = pairing
        self.is_orig = is_orig
        self.buf = b""
        self.lost = False
        self.ts = 0

    def data(self, data: bytes, ts: int) -> None:
        if self.lost:
            return
        if not self.buf:
            self.ts = ts
        buf = self.buf + data
        while len(buf) >= 2:
            ln = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + ln:
                break
            self.pairing.message(buf[2:2 + ln], self.ts, self.is_orig)
            buf = buf[2 + ln:]
            self.ts = ts
        self.buf = buf

    def gap(self, nbytes: int, ts: int) -> None:
        if not self.lost:
            self.lost = True
            self.buf = b""
            _count(self.pairing.l7, "tcp_framing_lost")

    def end(self, ts: int) -> None:
        if self.buf:
            _count(self.pairing.l7, "tcp_partial_message")
            self.buf = b""


class DirState(msgspec.Struct, array_like=True):
    """A reassembly Direction's fields (until Direction.to_state() lands from the codec work)."""
    next_seq: int | None
    midstream: bool
    pending: list[tuple[int, bytes, int, int]]


class FramerState(msgspec.Struct, array_like=True):
    buf: bytes
    lost: bool
    ts: int


class DnsTcpState(msgspec.Struct, tag="dns_tcp", array_like=True):
    pairing: PairingState
    orig: DirState
    resp: DirState
    orig_framer: FramerState
    resp_framer: FramerState


def _dir_state(d: Direction) -> DirState:
    return DirState(d.next_seq, d.midstream, [(s, p, w, t) for s, (p, w, t) in d.pending.items()])


def _dir_restore(d: Direction, st: DirState) -> None:
    d.next_seq = st.next_seq
    d.midstream = st.midstream
    for s, p, w, t in st.pending:  # through segment(): the index is rebuilt the same way
        d.segment(s, p, w, t)
        d.stats.segments -= 1
        d.stats.out_of_order -= 1


class DnsTcpAnalyzer:
    """DNS over TCP: both directions reassembled, several messages per connection."""

    __slots__ = ("pairing", "orig", "resp", "waiting", "l7", "flow")

    def __init__(self, l7, flow, isn_orig, isn_resp, midstream: bool):
        self.l7 = l7
        self.flow = flow
        self.waiting = None
        self.pairing = Pairing(l7, flow, "tcp")
        cap = min(l7.config.reassembly_cap, DEFAULT_BUFFER_CAP)
        self.orig = Direction(TcpFramer(self.pairing, True), cap, l7.stats)
        self.resp = Direction(TcpFramer(self.pairing, False), cap, l7.stats)
        if isn_orig is not None:
            self.orig.syn(isn_orig)
        if isn_resp is not None:
            self.resp.syn(isn_resp)

    def packet(self, r, is_orig: bool) -> None:
        d, peer = (self.orig, self.resp) if is_orig else (self.resp, self.orig)
        flags = r.tcp_flags
        if flags & 0x10 and peer.pending:
            peer.acked(r.ack, r.ts_ns)
        if flags & 0x02:
            d.syn(r.seq)
        elif r.payload_len:
            d.segment(r.seq, r.payload, r.payload_len, r.ts_ns)

    def finish(self, ts_ns: int) -> None:
        self.orig.end(ts_ns)
        self.resp.end(ts_ns)
        self.pairing.finish()

    def abandon(self) -> None:
        for q in self.pairing.pending.values():
            q.tags.append("analyzer_error")
        self.pairing.finish()

    def to_state(self) -> DnsTcpState:
        fo, fr = self.orig.consumer, self.resp.consumer
        return DnsTcpState(self.pairing.to_state(), _dir_state(self.orig), _dir_state(self.resp),
                           FramerState(fo.buf, fo.lost, fo.ts), FramerState(fr.buf, fr.lost, fr.ts))

    @classmethod
    def from_state(cls, state: DnsTcpState, l7, flow) -> DnsTcpAnalyzer:
        a = cls(l7, flow, None, None, False)
        a.pairing.restore(state.pairing)
        for d, ds, fs in ((a.orig, state.orig, state.orig_framer),
                          (a.resp, state.resp, state.resp_framer)):
            d.consumer.buf, d.consumer.lost, d.consumer.ts = fs.buf, fs.lost, fs.ts
            _dir_restore(d, ds)
        return a
