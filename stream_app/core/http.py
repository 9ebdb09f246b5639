"""HTTP/1.x transactions from the two reassembled byte streams of a TCP connection.

A small streaming framer, written for what mirrored traffic needs rather than taken from a
strict parser (llhttp via httptools, or h11), because it must
- frame a response by its request (HEAD, CONNECT) and by its status (1xx, 204, 304);
- keep counting through gaps inside a body and resynchronise on the next message after a gap
  it cannot cross, where a strict parser's state is simply lost;
- tolerate what real servers send (bare LF line ends, HTTP/0.9, junk between messages) and tag
  what is malformed instead of stopping;
- count bodies without storing them, and be cheap on the per-packet path (a body segment costs
  one subtraction).

Requests and responses pair in order (pipelining), 1xx interim responses are noted on the
request they answer, and the value of credentials and cookies is redacted unless the caller
asks to keep it.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Annotated

import msgspec

from stream_app.core.redact import RedactConfig, redact_request

MAX_HEADER_BYTES = 64 * 1024
MAX_PENDING = 64
MAX_URI = 8192
MAX_CONTENT_LENGTH = 1 << 62
RESYNC_TAIL = 96

_METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
            b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"SEARCH",
            b"REPORT", b"MKACTIVITY", b"CHECKOUT", b"MERGE", b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE",
            b"PURGE", b"LINK", b"UNLINK", b"BPROPFIND", b"POLL")
_TOKEN = re.compile(rb"[A-Za-z][A-Za-z0-9_-]{0,19}")
_RESYNC_REQUEST = re.compile(rb"(?:%s) [^\s]+ HTTP/1\.[01]\r?\n" % b"|".join(_METHODS))
_RESYNC_RESPONSE = re.compile(rb"HTTP/1\.[01] [1-5]\d\d[ \r\n]")

REDACTED = "[redacted]"
_HEXDIGITS = b"0123456789abcdefABCDEF"

# Framer states
START, HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER, UNTIL_CLOSE, TUNNEL, LOST = range(10)
SKIP_HEAD = 10
"""The rest of a head longer than MAX_HEADER_BYTES, discarded up to its blank line."""


@dataclass(slots=True)
class HttpConfig:
    keep_credentials: bool = False
    """Keep the values of Authorization, Proxy-Authorization, Cookie and Set-Cookie, and the
    credentials in URIs and Referer (off: they are redacted, keeping only the auth scheme, the
    cookie names and the parameter names; stream_app/core/redact.py)."""
    redact: RedactConfig = field(default_factory=RedactConfig)
    """Query parameter and path segment names redacted beside the defaults."""
    max_pending: int = MAX_PENDING
    """Requests awaiting a response per connection; older ones are reported as no_response."""


def redact_auth(value: str) -> str:
    scheme, _, rest = value.partition(" ")
    return f"{scheme} {REDACTED}" if rest else REDACTED


def redact_cookie(value: str) -> str:
    parts = []
    for item in value.split(";"):
        name, eq, _ = item.strip().partition("=")
        parts.append(f"{name}={REDACTED}" if eq else REDACTED)
    return "; ".join(parts)


class TxnState(msgspec.Struct, array_like=True, gc=False):
    """A Txn as stored (stream_app/state/codec.py)."""

    ts: int
    depth: int
    tags: list[str]
    method: str | None
    uri: str | None
    version: str | None
    host: str | None
    user_agent: str | None
    referrer: str | None
    req_ctype: str | None
    reason: str | None
    resp_version: str | None
    resp_ctype: str | None
    auth: str | None
    proxy_auth: str | None
    cookie: str | None
    set_cookie: str | None
    status: int | None
    resp_ts: int | None
    req_body: Annotated[int, msgspec.Meta(ge=0)]
    resp_body: Annotated[int, msgspec.Meta(ge=0)]
    req_done: bool


_TXN_FIELDS = TxnState.__struct_fields__
_TXN_GET = attrgetter(*_TXN_FIELDS)
_TXN_SET = _TXN_FIELDS[3:]  # beside ts, depth and tags: set only where not the class default


class Txn:
    """One request/response exchange being assembled. Fields default at class level, so a
    new transaction costs only the fields its messages set (most stay None)."""

    method = uri = version = host = user_agent = referrer = req_ctype = None
    reason = resp_version = resp_ctype = auth = proxy_auth = cookie = set_cookie = None
    status = resp_ts = None
    req_body = resp_body = 0
    req_done = False

    def __init__(self, ts: int, depth: int):
        self.ts = ts
        self.depth = depth
        self.tags: list[str] = []

    def tag(self, t: str) -> None:
        if t not in self.tags:
            self.tags.append(t)

    def to_state(self) -> TxnState:
        return TxnState(*_TXN_GET(self))

    @classmethod
    def from_state(cls, st: TxnState) -> Txn:
        t = cls(st.ts, st.depth)
        t.tags = st.tags
        d = t.__dict__
        for name in _TXN_SET:
            v = getattr(st, name)
            if v != getattr(cls, name):  # (a status 0 or an empty URI is not the default)
                d[name] = v
        return t


_Count = Annotated[int, msgspec.Meta(ge=0)]
_Index = Annotated[int, msgspec.Meta(ge=0)]
_State = Annotated[int, msgspec.Meta(ge=0, le=10)]  # START .. SKIP_HEAD


class MessageStreamState(msgspec.Struct, array_like=True, gc=False):
    """A MessageStream as stored: its transaction is an index into the conversation's
    ``txns`` (-1: none), because it is often the very object pending in the conversation.
    Counts are held non-negative by the decoder: a state's bytes never drive the framer
    backwards."""

    state: _State
    buf: bytes
    remaining: _Count
    txn: Annotated[int, msgspec.Meta(ge=-1)]
    msg_ts: int
    scan: _Count
    resume: tuple[_State, _Count]


class MessageStream:
    """Frames the HTTP messages of one direction; a reassembly consumer (data, gap, end)."""

    __slots__ = ("conv", "is_request", "state", "buf", "remaining", "txn", "msg_ts", "scan",
                 "resume")

    def __init__(self, conv: HttpConversation, is_request: bool):
        self.conv = conv
        self.is_request = is_request
        self.state = START
        self.buf = b""
        self.remaining = 0
        self.txn: Txn | None = None
        self.msg_ts = 0
        self.scan = 0  # bytes of buf already searched for a head's end (HEAD, SKIP_HEAD)
        self.resume = (START, 0)  # (state, remaining) after SKIP_HEAD

    def __setstate__(self, state) -> None:
        # Version-1 (pickled) state only, read by the codec's restricted unpickler: one
        # pickled before scan/resume existed restores with their defaults.
        self.scan = 0
        self.resume = (START, 0)
        for k, v in state[1].items():
            setattr(self, k, v)

    def to_state(self, ref) -> MessageStreamState:
        return MessageStreamState(self.state, self.buf, self.remaining, ref(self.txn),
                                  self.msg_ts, self.scan, self.resume)

    def restore(self, st: MessageStreamState, txns: list[Txn]) -> None:
        self.state, self.buf, self.remaining = st.state, st.buf, st.remaining
        self.txn = txns[st.txn] if st.txn >= 0 else None
        self.msg_ts, self.scan, self.resume = st.msg_ts, st.scan, st.resume

    # -- reassembly consumer ------------------------------------------------------------------
    def data(self, data: bytes, ts: int) -> None:
        st = self.state
        if st == BODY:  # the common case: a segment of a known-length body
            n = len(data)
            if n < self.remaining:
                self.remaining -= n
                self._count_body(n)
                return
        elif st == TUNNEL:
            conv = self.conv
            if conv.probe_tunnel and self.is_request:
                # A CONNECT tunnel usually carries TLS; when it carries plain HTTP, parse it.
                conv.probe_tunnel = False
                if looks_like_http(data, True):
                    conv.requests.state = conv.responses.state = START
                    self._feed(data, ts)
            return
        self._feed(data, ts)

    def gap(self, n: int, ts: int) -> None:
        st = self.state
        txn = self.txn
        if st in (BODY, CHUNK_DATA) and n <= self.remaining:
            self.remaining -= n
            self._count_body(n)
            if txn is not None:
                txn.tag("gap")
            if st == BODY and self.remaining == 0:
                self._end_message(ts)
            elif st == CHUNK_DATA and self.remaining == 0:
                self.state = CHUNK_END
            return
        if st == UNTIL_CLOSE:
            self._count_body(n)
            if txn is not None:
                txn.tag("gap")
            return
        if st == TUNNEL:
            return
        if txn is not None:
            txn.tag("gap")
            self._end_message(ts, complete=False)
        elif st == START:
            # Lost bytes at a message boundary held the start of a message: charge it to the
            # exchange it belonged to, so that the messages after it still pair correctly.
            self.conv.lost_message(self.is_request, ts)
        self.conv.stats_lost += 1
        self.state = LOST
        self.buf = b""

    def jump(self, n: int, ts: int) -> None:
        """The sequence numbers jumped beyond any TCP window (reassembly): unlike a gap of
        known length, it says nothing of how many messages were missed, so none is charged
        at a message boundary (that mispaired every later response); a message in progress
        is cut and tagged gap, and framing resynchronises on the next start line."""
        st = self.state
        if st in (UNTIL_CLOSE, TUNNEL):
            self.gap(n, ts)
            return
        if self.txn is not None:
            self.txn.tag("gap")
            self._end_message(ts, complete=False)
        self.conv.stats_lost += 1
        self.state = LOST
        self.buf = b""

    def end(self, ts: int) -> None:
        st = self.state
        if st == UNTIL_CLOSE:
            self._end_message(ts)
        elif st in (HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER, SKIP_HEAD) \
                and self.txn is not None:
            self.txn.tag("truncated")
            self._end_message(ts, complete=False)
        elif st == HEAD and self.buf.strip():
            # A head the connection's end cut short: record what it says rather than lose it.
            head, self.buf = self.buf.rstrip(b"\r\n"), b""
            if self._start_message(head, ts, cut=True) and self.txn is not None:
                self._end_message(ts, complete=False)
        elif st == START and self.buf.strip():
            self.conv.malformed(self.is_request, ts)
        self.state = TUNNEL

    # -- framing ------------------------------------------------------------------------------
    def start(self, data: bytes, ts: int) -> None:
        """A segment that begins at a message boundary (state START, nothing buffered): the
        usual case of a whole head, and often its body, in one segment, without the general
        loop's per-state round trips. Anything unusual goes to _feed."""
        end = data.find(b"\r\n\r\n")
        if end <= 0 or end > MAX_HEADER_BYTES or data[0] in (13, 10) \
                or data.find(b"\n\n", 0, end) != -1:
            self._feed(data, ts)
            return
        self.msg_ts = ts
        self.state = HEAD
        if not self._start_message(data[:end], ts):
            self.state = LOST  # resynchronise on what follows
            self._feed(data[end + 4:], ts)
            return
        rest = len(data) - end - 4
        if not rest:
            return
        if self.state == BODY and rest <= self.remaining:
            self.remaining -= rest
            self._count_body(rest)
            if self.remaining == 0:
                self._end_message(ts)
            return
        self._feed(data[end + 4:], ts)

    def _count_body(self, n: int) -> None:
        txn = self.txn
        if txn is not None:
            if self.is_request:
                txn.req_body += n
            else:
                txn.resp_body += n

    def _feed(self, data: bytes, ts: int) -> None:
        """The general framing loop. Every state change, resynchronising after garbage or an
        error included, continues in this one loop and each turn either consumes bytes or
        returns, so no input can nest calls or spin (a head over MAX_HEADER_BYTES once sent
        _feed and _resync into each other until RecursionError)."""
        buf = self.buf + data if self.buf else data
        self.buf = b""
        scan, self.scan = self.scan, 0
        pos = 0
        n = len(buf)
        while pos < n:
            st = self.state
            if st == BODY:
                take = min(self.remaining, n - pos)
                self.remaining -= take
                self._count_body(take)
                pos += take
                if self.remaining == 0:
                    self._end_message(ts)
            elif st == START:
                # Blank lines between messages are allowed (RFC 9112 2.2).
                c = buf[pos]
                if c == 13 or c == 10:
                    while pos < n and buf[pos] in (13, 10):
                        pos += 1
                    if pos == n:
                        return
                self.msg_ts = ts
                self.state = HEAD
            elif st == HEAD:
                # Search only what was not searched before: a head arriving in many small
                # segments costs linear, not quadratic, time.
                frm = scan if scan > pos else pos
                scan = 0
                end = buf.find(b"\r\n\r\n", frm)
                sep = 4
                # A bare-LF blank line ends a head too; look for one only before a CRLF one.
                lf = buf.find(b"\n\n", frm, n if end == -1 else end)
                if lf != -1:
                    end, sep = lf, 2
                if end == -1 or end - pos > MAX_HEADER_BYTES:
                    if end == -1 and self.is_request and self._http09(buf, pos, ts):
                        pos = buf.index(b"\n", pos) + 1
                        continue
                    if end == -1 and n - pos <= MAX_HEADER_BYTES:
                        self.buf = buf[pos:]
                        self.scan = max(0, n - pos - 3)
                        return
                    pos = self._oversized_head(buf, pos, ts)
                    continue
                head = buf[pos:end]
                if sep == 2 and head.endswith(b"\r"):
                    head = head[:-1]  # a CRLF line then a bare LF: the CR is the line's end
                pos = end + sep
                if not self._start_message(head, ts):
                    self.state = LOST  # resynchronise on what follows the head
                    continue
            elif st == SKIP_HEAD:
                frm = scan if scan > pos else pos
                scan = 0
                end = buf.find(b"\r\n\r\n", frm)
                sep = 4
                lf = buf.find(b"\n\n", frm, n if end == -1 else end)
                if lf != -1:
                    end, sep = lf, 2
                if end == -1:
                    self.buf = buf[max(pos, n - 3):]  # a blank line may straddle segments
                    return
                pos = end + sep
                self.state, self.remaining = self.resume
                if self.state == START:
                    # The skipped headers may have announced a body: find the next message
                    # by its start line, which also takes one that follows at once.
                    self.state = LOST
            elif st == CHUNK_SIZE:
                eol = buf.find(b"\n", pos)
                if eol == -1:
                    if n - pos > 1024:
                        self._framing_error(ts)
                        continue
                    self.buf = buf[pos:]
                    return
                line = buf[pos:eol].split(b";", 1)[0].strip()
                pos = eol + 1
                # RFC 9112 7.1: 1*HEXDIG. int(x, 16) alone also takes 0x10, 1_0 and +10,
                # which servers read differently (a smuggling vector).
                if not line or len(line) > 16 or line.strip(_HEXDIGITS):
                    self._framing_error(ts)
                    continue
                size = int(line, 16)
                if size < 0 or size > 1 << 62:
                    self._framing_error(ts)
                    continue
                if size == 0:
                    self.state = TRAILER
                else:
                    self.remaining = size
                    self.state = CHUNK_DATA
            elif st == CHUNK_DATA:
                take = min(self.remaining, n - pos)
                self.remaining -= take
                self._count_body(take)
                pos += take
                if self.remaining == 0:
                    self.state = CHUNK_END
            elif st == CHUNK_END:
                eol = buf.find(b"\n", pos)
                if eol == -1:
                    if n - pos > 2:
                        self._framing_error(ts)
                        continue
                    self.buf = buf[pos:]
                    return
                pos = eol + 1
                self.state = CHUNK_SIZE
            elif st == TRAILER:
                eol = buf.find(b"\n", pos)
                if eol == -1:
                    if n - pos > MAX_HEADER_BYTES:  # a trailer line that never ends
                        self._framing_error(ts)
                        continue
                    self.buf = buf[pos:]
                    return
                line = buf[pos:eol].strip()
                pos = eol + 1
                if not line:
                    self._end_message(ts)
            elif st == UNTIL_CLOSE:
                txn = self.txn
                if txn is not None and txn.version == "0.9" and not txn.resp_body \
                        and buf[pos:pos + 5].upper() == b"HTTP/":
                    # A request without a version answered with a status line: the server
                    # speaks HTTP/1.x (as servers answer a bad request line), read it so.
                    self.txn = None
                    self.state = START
                    continue
                self._count_body(n - pos)
                return
            elif st == TUNNEL:
                return
            else:  # LOST: look for the next message start after a gap or garbage
                m = (_RESYNC_REQUEST if self.is_request else _RESYNC_RESPONSE).search(buf, pos)
                if m is None:
                    # Keep a short tail, so a start line split over two segments is found.
                    self.buf = buf[max(pos, n - RESYNC_TAIL):]
                    return
                self.conv.stats_resync += 1
                pos = m.start()
                self.state = START

    def _framing_error(self, ts: int) -> None:
        if self.txn is not None:
            self.txn.tag("malformed_chunked")
            self._end_message(ts, complete=False)
        self.state = LOST
        self.buf = b""

    def _oversized_head(self, buf: bytes, pos: int, ts: int) -> int:
        """A head longer than MAX_HEADER_BYTES: record its message from the start line and the
        headers in its first MAX_HEADER_BYTES, tagged head_too_large, skip the rest of the
        head (SKIP_HEAD) and frame what follows as those headers say (when they announce no
        body, resynchronise on the next start line: the skipped part may have announced one).
        A start line that begins no message is garbage: recorded as malformed, and the search
        for the next message starts one byte on. Returns where framing goes on."""
        limit = pos + MAX_HEADER_BYTES
        cut = buf.rfind(b"\n", pos, limit)
        head = buf[pos:cut] if cut > pos else buf[pos:limit]
        if head.endswith(b"\r"):
            head = head[:-1]
        conv = self.conv
        done_before = len(conv.done)
        if not self._start_message(head, ts):  # recorded as malformed
            self.state = LOST
            return pos + 1
        if self.is_request:
            txn = conv.pending[-1]
        elif self.txn is not None:
            txn = self.txn
        elif len(conv.done) > done_before:
            txn = conv.done[-1]
        else:  # an interim (1xx) response
            txn = conv.pending[0] if conv.pending else None
        if txn is not None:
            txn.tag("head_too_large")
        self.resume = (self.state, self.remaining)
        self.state = SKIP_HEAD
        return cut + 1 if cut > pos else limit

    def _http09(self, buf: bytes, pos: int, ts: int) -> bool:
        """An HTTP/0.9 request is one line, method and URI with no version and no headers:
        taken as soon as its line is complete (the server answers it at once)."""
        eol = buf.find(b"\n", pos)
        if eol == -1:
            return False
        line = buf[pos:eol].rstrip(b"\r")
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) < 3 or parts[1].startswith(b"HTTP/") \
                or not _TOKEN.fullmatch(parts[0]):
            return False
        return self._start_message(line, ts)

    def _start_message(self, head: bytes, ts: int, cut: bool = False) -> bool:
        parsed = _parse_head(head, self.is_request)
        if parsed is _DECLINE:  # a rare head the C version leaves to the reference
            parsed = parse_head(head, self.is_request)
        conv = self.conv
        if parsed is None:
            conv.malformed(self.is_request, ts)
            return False
        a, b, c, length, chunked, tags, fields = parsed
        if self.is_request:
            txn = conv.new_request(self.msg_ts or ts)
            txn.method, txn.uri, txn.version = a, b, c
        else:
            txn = conv.response_for(self.msg_ts or ts)
            if 100 <= a < 200 and a != 101:
                # An interim response: the final one follows for the same request.
                txn.tag(f"interim_{a}")
                self.state = START
                return True
            txn.status, txn.reason, txn.resp_version = a, b, c
            txn.resp_ts = self.msg_ts or ts
        self.txn = txn
        for t in tags:
            txn.tag(t)
        if cut:
            txn.tag("truncated")
        for attr, value in fields:
            if attr in _REDACT:
                value = conv.credential(value, _REDACT[attr])
                if attr == "set_cookie" and txn.set_cookie is not None:
                    value = f"{txn.set_cookie}, {value}"
            setattr(txn, attr, value)
        if self.is_request and not conv.config.keep_credentials:
            redact_request(txn, conv.config.redact)  # URI, Referer, Host: before anything keeps them
        # How long is the body?
        if self.is_request:
            if chunked:
                self.state = CHUNK_SIZE
            elif length:
                self.state, self.remaining = BODY, length
            else:
                self._end_message(ts)
        else:
            method = txn.method
            status = txn.status
            if method == "HEAD" or status in (204, 304):
                self._end_message(ts)
            elif method == "CONNECT" and 200 <= status < 300 or status == 101:
                txn.tag("tunnel" if status != 101 else "upgrade")
                self._end_message(ts)
                conv.tunnel(probe=status != 101)
            elif chunked:
                self.state = CHUNK_SIZE
            elif length is not None:
                if length:
                    self.state, self.remaining = BODY, length
                else:
                    self._end_message(ts)
            else:
                self.state = UNTIL_CLOSE
        return True

    def _end_message(self, ts: int, complete: bool = True) -> None:
        txn = self.txn
        self.txn = None
        if self.state != TUNNEL:
            self.state = START
        if txn is None:
            return
        if self.is_request:
            txn.req_done = True
            self.conv.request_done(txn)
        else:
            self.conv.response_done(txn)


def parse_head(head: bytes, is_request: bool):
    """Parse one message head (start line and header block, without the blank line).

    Returns None when the start line begins no message, else a tuple
    (a, b, c, length, chunked, tags, fields):
    - a request: a = method, b = URI (or None), c = version (or None);
      a response: a = status code (int), b = reason phrase (or None), c = version;
    - length = the Content-Length (None when absent or invalid), chunked = whether the
      Transfer-Encoding says chunked;
    - tags = what was odd, in order; fields = (Txn attribute, text value) pairs to set,
      credentials unredacted (the caller redacts).
    A pure function of its input, so that a C version can be held equal to it."""
    eol = head.find(b"\n")
    first = (head if eol == -1 else head[:eol]).rstrip(b"\r")
    rest = b"" if eol == -1 else head[eol:]
    tags: list[str] = []
    if is_request:
        parts = first.split()
        if not parts or not _TOKEN.fullmatch(parts[0]):
            return None
        # Read what the line gives even when it is not well-formed (a missing URI or
        # version, extra spaces): servers answer such requests, and so must the record.
        # Two-part lines follow Zeek's HTTP analyzer (HTTP.cc, ParseRequest and
        # HTTP_RequestLine): "GET HTTP/1.1" has an empty target and version 1.1; a line
        # without "HTTP/" is HTTP/0.9 (RFC 1945 Simple-Request) when its method has at least
        # 3 characters, whatever the method (RFC 1945 allows only GET; Zeek accepts any).
        a = _text(parts[0])
        if len(parts) == 2 and parts[1].startswith(b"HTTP/"):
            b, c = "", _text(parts[1][5:])
            tags.append("malformed_request")
        elif len(parts) == 2 and len(parts[0]) >= 3:
            b, c = _text(parts[1][:MAX_URI]), "0.9"
            tags.append("http09")
        else:
            b = _text(parts[1][:MAX_URI]) if len(parts) > 1 else None
            c = _text(parts[2][5:]) if len(parts) > 2 and parts[2].startswith(b"HTTP/") else None
            if len(parts) != 3 or c is None or first.count(b" ") != 2:
                tags.append("malformed_request")
        text_fields = _REQUEST_TEXT
    else:
        # RFC 9112 4: HTTP-version SP 3DIGIT; anything else is not a status line. The
        # version's name is case-sensitive (RFC 9112 2.3), but clients accept "http/1.1"
        # (so would an attacker's client): read it, and tag it.
        if not first.startswith(b"HTTP/"):
            if first[:5].upper() != b"HTTP/":
                return None
            tags.append("lowercase_status_line")
        if len(first) < 12 or first[8] != 32 or not first[9:12].isdigit():
            return None
        a = int(first[9:12])
        b = _text(first[13:]) or None
        c = _text(first[5:8])
        text_fields = _RESPONSE_TEXT
    length = None
    chunked = False
    fields: list[tuple[str, str]] = []
    for name, value in _headers(rest):
        if name == b"content-length":
            # RFC 9110 8.6: 1*DIGIT. Signs, underscores and odd white space that a lenient
            # int() would take are invalid: servers disagree on them (a smuggling vector).
            digits = value.lstrip(b"0") or value[:1]
            v = int(digits) if value.isdigit() and len(digits) <= 19 else -1
            if v < 0 or v > MAX_CONTENT_LENGTH:
                # Negative, overflowing or unreadable lengths are invalid; servers reject or
                # misread them, so the bytes after the head are framed as the next message.
                if "bad_content_length" not in tags:
                    tags.append("bad_content_length")
                continue
            if length is not None and v != length and "conflicting_content_length" not in tags:
                tags.append("conflicting_content_length")
            length = v
        elif name == b"transfer-encoding":
            if b"chunked" in value.lower():
                chunked = True
        else:
            attr = text_fields.get(name)
            if attr is not None:
                fields.append((attr, _text(value)))
    if chunked and length is not None:
        # RFC 9112 6.3: Transfer-Encoding overrides Content-Length (a smuggling sign).
        tags.append("te_and_cl")
    return a, b, c, length, chunked, tags, fields


# The headers a record uses; everything else in a header block is skipped over by the regex
# engine without building Python objects (most of a message's parsing cost otherwise).
_WANTED = re.compile(
    rb"\n(content-length|transfer-encoding|host|user-agent|referer|content-type|authorization"
    rb"|proxy-authorization|cookie|set-cookie)[ \t]*:[ \t]*([^\r\n]*)(?=\r?\n|$)",
    re.IGNORECASE)
# The value's trailing white space is stripped after the match, not by a lazy group followed
# by [ \t]*: that pattern backtracks quadratically on a value of many spaces (a 60 KB head
# took 70 s).


def _headers(block: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, value) of the wanted headers in a header block (which starts with the
    newline that ended the start line)."""
    if b"\n " in block or b"\n\t" in block:
        block = _unfold(block)
    return [(name.lower(), value.rstrip(b" \t")) for name, value in _WANTED.findall(block)]


def _unfold(block: bytes) -> bytes:
    """Obsolete line folding (RFC 9112 5.2): a line starting with white space continues the
    previous header's value."""
    return re.sub(rb"\r?\n[ \t]+", b" ", block)


# Header -> Txn attribute, for the headers a record keeps.
_REQUEST_TEXT = {b"host": "host", b"user-agent": "user_agent", b"referer": "referrer",
                 b"content-type": "req_ctype", b"authorization": "auth",
                 b"proxy-authorization": "proxy_auth", b"cookie": "cookie"}
_RESPONSE_TEXT = {b"content-type": "resp_ctype", b"set-cookie": "set_cookie"}
_REDACT = {"auth": redact_auth, "proxy_auth": redact_auth, "cookie": redact_cookie,
           "set_cookie": redact_cookie}


def _text(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


class ConversationState(msgspec.Struct, array_like=True, gc=False):
    """An HttpConversation as stored: every Txn it reaches once, in ``txns``, and the
    pending and done queues and the streams' current transactions as indexes into it (one
    object in two places stays one object)."""

    txns: list[TxnState]
    pending: list[_Index]
    done: list[_Index]
    requests: MessageStreamState
    responses: MessageStreamState
    depth: _Count
    midstream: bool
    stats_lost: int
    stats_resync: int
    http09: bool
    dropped_pending: int
    tunneled: bool
    probe_tunnel: bool


class HttpConversation:
    """Pairs the two directions' messages into transactions for one TCP connection."""

    __slots__ = ("config", "requests", "responses", "pending", "done", "depth", "midstream",
                 "stats_lost", "stats_resync", "http09", "dropped_pending", "tunneled",
                 "probe_tunnel")

    def __init__(self, config: HttpConfig):
        self.config = config
        self.requests = MessageStream(self, True)
        self.responses = MessageStream(self, False)
        self.pending: deque[Txn] = deque()
        self.done: list[Txn] = []
        self.depth = 0
        self.midstream = False
        self.stats_lost = 0
        self.stats_resync = 0
        self.http09 = False
        self.dropped_pending = 0
        self.tunneled = False
        self.probe_tunnel = False

    def to_state(self) -> ConversationState:
        txns: list[TxnState] = []
        index: dict[int, int] = {}

        def ref(t: Txn | None) -> int:
            if t is None:
                return -1
            i = index.get(id(t))
            if i is None:
                i = index[id(t)] = len(txns)
                txns.append(t.to_state())
            return i
        pending = [ref(t) for t in self.pending]
        done = [ref(t) for t in self.done]
        return ConversationState(txns, pending, done, self.requests.to_state(ref),
                                 self.responses.to_state(ref), self.depth, self.midstream,
                                 self.stats_lost, self.stats_resync, self.http09,
                                 self.dropped_pending, self.tunneled, self.probe_tunnel)

    @classmethod
    def from_state(cls, st: ConversationState, config: HttpConfig) -> HttpConversation:
        """``config``: the restoring table's (shared, never stored)."""
        conv = cls(config)
        txns = [Txn.from_state(t) for t in st.txns]
        conv.pending.extend(txns[i] for i in st.pending)
        conv.done = [txns[i] for i in st.done]
        conv.requests.restore(st.requests, txns)
        conv.responses.restore(st.responses, txns)
        conv.depth, conv.midstream = st.depth, st.midstream
        conv.stats_lost, conv.stats_resync = st.stats_lost, st.stats_resync
        conv.http09, conv.dropped_pending = st.http09, st.dropped_pending
        conv.tunneled, conv.probe_tunnel = st.tunneled, st.probe_tunnel
        return conv

    def credential(self, value: str, redact) -> str:
        return value if self.config.keep_credentials else redact(value)

    def new_request(self, ts: int) -> Txn:
        self.depth += 1
        txn = Txn(ts, self.depth)
        if self.midstream and self.depth == 1:
            txn.tag("midstream")
        if self.pending:
            txn.tag("pipelined")
        self.pending.append(txn)
        if len(self.pending) > self.config.max_pending:
            old = self.pending.popleft()
            old.tag("no_response")
            self.dropped_pending += 1
            self.done.append(old)
        return txn

    def response_for(self, ts: int) -> Txn:
        """The request this response answers: the oldest one without a response."""
        if self.pending:
            return self.pending[0]
        # A response with no request seen (midstream, or the request was lost).
        self.depth += 1
        txn = Txn(ts, self.depth)
        txn.tag("no_request")
        if self.midstream:
            txn.tag("midstream")
        self.pending.append(txn)
        return txn

    def request_done(self, txn: Txn) -> None:
        if txn.version == "0.9":
            self.http09 = True
            # The response to HTTP/0.9 is the raw body up to the close: no status line.
            self.responses.txn = txn
            self.responses.state = UNTIL_CLOSE
            txn.resp_ts = None

    def response_done(self, txn: Txn) -> None:
        if self.pending and self.pending[0] is txn:
            self.pending.popleft()
        elif txn in self.pending:
            self.pending.remove(txn)
        self.done.append(txn)

    def lost_message(self, is_request: bool, ts: int) -> None:
        if is_request:
            txn = self.new_request(ts)
            txn.tag("gap")
            txn.req_done = True
        elif self.pending:
            txn = self.pending[0]
            txn.tag("gap")
            txn.tag("no_response")
            self.response_done(txn)

    def malformed(self, is_request: bool, ts: int) -> None:
        """Bytes that do not start a message: recorded as a transaction tagged malformed,
        so that nothing the client sent disappears unseen."""
        if is_request:
            txn = self.new_request(ts)
            txn.tag("malformed_request")
            txn.req_done = True
        else:
            txn = self.response_for(ts)
            txn.tag("malformed_response")
            self.response_done(txn)

    def tunnel(self, probe: bool) -> None:
        self.tunneled = True
        self.probe_tunnel = probe
        self.requests.state = TUNNEL
        self.responses.state = TUNNEL

    def finish(self) -> list[Txn]:
        """The connection ended: requests still waiting get no_response."""
        for txn in self.pending:
            if txn.status is None and "no_response" not in txn.tags:
                txn.tag("no_response")
            self.done.append(txn)
        self.pending.clear()
        return self.take()

    def take(self) -> list[Txn]:
        out, self.done = self.done, []
        return out


def looks_like_http(data: bytes, is_request: bool) -> bool:
    """Whether a connection's first bytes in a direction start an HTTP/1.x message: a known
    method, or any method token whose request line ends in an HTTP version (servers accept
    extension methods such as QUERY or CCM_POST)."""
    if is_request:
        return request_start_verdict(data) is True
    return response_start_verdict(data) is True


def request_start_verdict(data: bytes) -> bool | None:
    """Whether a client's first bytes start an HTTP request: True, False, or None when they
    are too few to say (b"G", b"GET", b"QUERY /x" with its line not yet complete) and the
    next segment must be waited for."""
    sp = data.find(b" ", 0, 21)
    if sp > 0:
        token = data[:sp]
        if token in _METHODS_SET:
            return True
        if _TOKEN.fullmatch(token) is None:
            return False
        if _GENERIC_REQUEST_LINE.match(data) is not None:
            return True
        # An extension method counts only with its line's version: wait for the line.
        return None if data.find(b"\n") == -1 and len(data) <= MAX_URI + 32 else False
    if sp == 0 or len(data) >= 21:
        return False
    return None if not data or _TOKEN.fullmatch(data) is not None else False


def response_start_verdict(data: bytes) -> bool | None:
    """The same for a server's first bytes: a status line's "HTTP/1." (or "HTTP/0.9"), in
    any case (see parse_head)."""
    head = data[:8].upper()
    for v in (b"HTTP/1.", b"HTTP/0.9"):
        if head.startswith(v):
            return True
    if len(head) < 8 and any(v.startswith(head) for v in (b"HTTP/1.", b"HTTP/0.9")):
        return None
    return False


_METHODS_SET = frozenset(_METHODS)
_GENERIC_REQUEST_LINE = re.compile(rb"[A-Za-z][A-Za-z0-9_-]{0,19} [^\s]{1,%d} HTTP/1\.[01]\r?\n" % MAX_URI)


# The C version of parse_head (stream_app/_fasthttp.c), held equal to the one above by
# tests/test_fasthttp_equivalence.py; it returns _DECLINE for rare heads (obsolete line
# folding, a non-bytes head, a Content-Length of over 640 digits), which parse_head then reads.
try:
    from stream_app._fasthttp import DECLINE as _DECLINE, parse_head as _c_parse_head
except ImportError:  # not built: the pure-Python parser
    _c_parse_head = None
    _DECLINE = object()
_parse_head = _c_parse_head or parse_head
