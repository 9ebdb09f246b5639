"""TCP reassembly and HTTP/1.x framing as a user sees them in http.jsonl."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import PacketRecord
from stream_app.core.flowtable import FlowConfig
from stream_app.core.http import HttpConfig, redact_auth, redact_cookie
from stream_app.core.l7 import L7Config
from stream_app.core.processor import CoreConfig, Processor
from stream_app.core.reassembly import Direction
from tests.conftest import CORPUS, run

# -- reassembly -------------------------------------------------------------------------------


class Stream:
    """Consumer recording what reassembly delivers."""

    def __init__(self):
        self.buf = bytearray()
        self.gaps = 0

    def data(self, b, ts):
        self.buf += b

    def gap(self, n, ts):
        self.gaps += n
        self.buf += b"\0" * n

    def end(self, ts):
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.data())
def test_any_segmentation_order_and_duplication_delivers_the_stream(payload, data):
    isn = data.draw(st.integers(0, 2**32 - 1))  # wraps around 2**32 often enough
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(payload)), max_size=20))))
    bounds = [0, *cuts, len(payload)]
    segs = [(bounds[i], payload[bounds[i]:bounds[i + 1]]) for i in range(len(bounds) - 1) if bounds[i] < bounds[i + 1]]
    # retransmissions, and overlapping re-segmentations, of random pieces
    extra = data.draw(st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(1, 500)), max_size=5))
    segs += [(a, payload[a:a + n]) for a, n in extra]
    order = data.draw(st.permutations(segs))
    out = Stream()
    d = Direction(out)
    d.syn(isn)
    for off, chunk in order:
        d.segment((isn + 1 + off) & 0xFFFFFFFF, chunk, len(chunk), 0)
    d.end(0)
    assert bytes(out.buf) == payload and out.gaps == 0


def test_a_lost_segment_becomes_a_gap_of_its_length():
    out = Stream()
    d = Direction(out)
    d.syn(100)
    d.segment(101, b"abc", 3, 0)
    d.segment(107, b"ghi", 3, 0)  # 104..106 never arrives
    d.end(0)
    assert bytes(out.buf) == b"abc\0\0\0ghi" and out.gaps == 3


def test_truncated_capture_is_delivered_as_data_then_gap():
    out = Stream()
    d = Direction(out)
    d.syn(0)
    d.segment(1, b"ab", 10, 0)  # 10 bytes on the wire, 2 captured
    d.segment(11, b"z", 1, 0)
    assert bytes(out.buf) == b"ab" + b"\0" * 8 + b"z"


def test_out_of_order_buffer_is_capped():
    out = Stream()
    d = Direction(out, cap=1000)
    d.syn(0)
    for i in range(10):  # the first 500 bytes never come; 10 x 200 wait behind the hole
        d.segment(501 + i * 200, b"x" * 200, 200, 0)
    assert d.pending_bytes <= 1000 and d.stats.cap_hits >= 1
    assert out.gaps == 500 and len(out.buf) >= 500 + 200


# -- HTTP through the whole core ----------------------------------------------------------------

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
S = 1_000_000


class Conn:
    """Builds a TCP connection's packets: client A:40000 -> server B:80."""

    def __init__(self, t0=0):
        self.t = t0
        self.cseq, self.sseq = 1000, 5000
        self.pkts: list[PacketRecord] = []

    def _p(self, client, flags, data=b""):
        self.t += S
        seq, ack = (self.cseq, self.sseq) if client else (self.sseq, self.cseq)
        src, dst, sp, dp = (A, B, 40000, 80) if client else (B, A, 80, 40000)
        self.pkts.append(PacketRecord(self.t, None, None, 4, src, dst, 6, sp, dp, flags, seq,
                                      ack if flags & 0x10 else 0,
                                      40 + len(data), 40 + len(data), len(data), data))
        if client:
            self.cseq += len(data) + (1 if flags & 0x03 else 0)
        else:
            self.sseq += len(data) + (1 if flags & 0x03 else 0)

    def handshake(self):
        self._p(True, 0x02)
        self._p(False, 0x12)
        self._p(True, 0x10)
        return self

    def c(self, data):
        self._p(True, 0x18, data)
        return self

    def s(self, data):
        self._p(False, 0x18, data)
        return self

    def close(self):
        self._p(True, 0x11)
        self._p(False, 0x11)
        self._p(True, 0x10)
        return self


def transactions(pkts, **http):
    core = Processor(CoreConfig(flows=FlowConfig(), l7=L7Config(http=HttpConfig(**http))))
    res = core.process(pkts)
    out = list(res.http) + list(core.finish().http)
    return out


def test_keep_alive_pipelining_chunked_head_and_no_body_statuses():
    c = Conn().handshake()
    c.c(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n")
    c.s(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    c.s(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")  # HEAD: no body follows
    c.c(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n")
    c.s(b"HTTP/1.1 204 No Content\r\n\r\n")
    c.c(b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n")
    c.s(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n")
    c.c(b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n")
    c.s(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")
    c.close()
    got = [(t.method, t.uri, t.status_code, t.request_body_len, t.response_body_len) for t in transactions(c.pkts)]
    assert got == [("GET", "/a", 200, 0, 5), ("HEAD", "/b", 200, 0, 0), ("POST", "/c", 204, 9, 0),
                   ("GET", "/d", 304, 0, 0), ("GET", "/e", 200, 0, 3)]


def test_mixed_line_ends_keep_the_last_header():
    # "Content-Length: 5\r\n\n": a CRLF header line, then a bare LF ends the head.
    c = Conn().handshake()
    c.c(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    c.s(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\nhelloHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    c.close()
    got = [(t.uri, t.status_code, t.response_body_len) for t in transactions(c.pkts)]
    assert got == [("/a", 200, 5), ("/b", 404, 0)]


def test_100_continue_connect_and_http09():
    c = Conn().handshake()
    c.c(b"PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    c.s(b"HTTP/1.1 100 Continue\r\n\r\n")
    c.c(b"abc")
    c.s(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    c.c(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n")
    c.s(b"HTTP/1.1 200 Connection established\r\n\r\n")
    c.c(b"\x16\x03\x01 binary tunnel bytes that are not HTTP")
    c.close()
    t = transactions(c.pkts)
    assert [(x.method, x.status_code, x.request_body_len) for x in t] == [("PUT", 201, 3), ("CONNECT", 200, 0)]
    assert "interim_100" in t[0].tags and "tunnel" in t[1].tags
    c09 = Conn().handshake().c(b"GET /old\r\n").s(b"<html>raw</html>").close()
    [t9] = transactions(c09.pkts)
    assert (t9.method, t9.uri, t9.version, t9.status_code, t9.response_body_len) == ("GET", "/old", "0.9", None, 16)


def test_response_without_length_runs_to_close_and_missing_response_is_tagged():
    c = Conn().handshake()
    c.c(b"GET / HTTP/1.0\r\n\r\n").s(b"HTTP/1.0 200 OK\r\n\r\n").s(b"x" * 300).close()
    [t] = transactions(c.pkts)
    assert t.response_body_len == 300 and t.version == "1.0"
    c2 = Conn().handshake().c(b"GET /lost HTTP/1.1\r\nHost: h\r\n\r\n").close()
    [t2] = transactions(c2.pkts)
    assert t2.status_code is None and "no_response" in t2.tags


def test_credentials_and_cookies_are_redacted_unless_kept():
    req = (b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic dXNlcjpwYXNz\r\n"
           b"Proxy-Authorization: Bearer abc.def\r\nCookie: session=s3cr3t; theme=dark\r\n\r\n")
    resp = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=n3w; HttpOnly\r\nContent-Length: 0\r\n\r\n"
    c = Conn().handshake().c(req).s(resp).close()
    [t] = transactions(c.pkts)
    assert t.authorization == "Basic [redacted]" and t.proxy_authorization == "Bearer [redacted]"
    assert t.cookie == "session=[redacted]; theme=[redacted]"
    assert t.set_cookie == "session=[redacted]; [redacted]"
    blob = json.dumps([t.authorization, t.proxy_authorization, t.cookie, t.set_cookie])
    assert "dXNlcjpwYXNz" not in blob and "s3cr3t" not in blob and "n3w" not in blob
    [k] = transactions(c.pkts, keep_credentials=True)
    assert k.authorization == "Basic dXNlcjpwYXNz" and k.cookie == "session=s3cr3t; theme=dark"
    assert redact_auth("token") == "[redacted]" and redact_cookie("a") == "[redacted]"


def test_gap_inside_a_body_keeps_the_count_and_the_next_message():
    c = Conn().handshake()
    c.c(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
    c.s(b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + b"a" * 1000)
    c.sseq += 1000  # 1000 body bytes the client received but the capture missed
    c.s(b"b" * 1000)
    c.c(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    c.s(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")
    c.close()
    t = transactions(c.pkts)
    assert [(x.uri, x.status_code, x.response_body_len) for x in t] == [("/big", 200, 3000), ("/next", 404, 2)]
    assert "gap" in t[0].tags and t[1].tags == []


def test_midstream_pickup_resynchronises_on_the_next_request():
    c = Conn()  # no handshake: the capture starts inside a response body
    c.s(b"...end of some earlier body...")
    c.c(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
    c.s(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    t = transactions(c.pkts)
    assert [(x.uri, x.status_code) for x in t] == [("/after", 200)]
    assert "midstream" in t[0].tags


def test_http_on_a_non_standard_port_and_not_on_other_protocols(tmp_path):
    _, flows = run([CORPUS / "zeek-http" / "http-single-conn-22.pcap"], tmp_path)
    assert any(f.app_proto == "http" and f.dstport == 22 for f in flows)
    _, flows = run([CORPUS / "sv__vxlan-decoder-03__vxlan.pcap"], tmp_path)  # SSH
    assert flows and not any(f.app_proto == "http" for f in flows)
    ssh = [f for f in flows if f.dstport == 22]
    assert ssh and all(f.app_proto == "ssh" and f.app_proto_source == "content" for f in ssh)
    ntp = [f for f in flows if f.dstport == 123]
    assert ntp and all(f.app_proto == "ntp" and f.app_proto_source == "port" for f in ntp)


def test_thousand_requests_one_dropped_response_bounded_pending(tmp_path):
    res, flows = run([CORPUS / "zeek-http" / "1000-requests-one-dropped-response.pcap.gz"], tmp_path)
    recs = [json.loads(line) for line in (tmp_path / "out" / "http.jsonl").read_text().splitlines()]
    requests = [r for r in recs if r["method"]]
    assert len(requests) == 1000
    assert sum(1 for r in recs if "no_response" in r["tags"]) == 1
    assert sum(1 for r in recs if r["status_code"]) == 999
    assert [r["trans_depth"] for r in recs] == list(range(1, 1001))


def test_pending_requests_are_bounded():
    c = Conn().handshake()
    for i in range(200):  # a client pipelining 200 requests the server never answers
        c.c(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
    core = Processor(CoreConfig(l7=L7Config(http=HttpConfig(max_pending=64))))
    res = core.process(c.pkts)
    f = next(iter(core.flows.flows.values()))
    assert len(f.l7.conv.pending) <= 64
    early = [t for t in res.http if "no_response" in t.tags]
    assert len(early) == 200 - 64  # reported as they fall out, not held
    assert len(res.http) + len(core.finish().http) == 200


def test_strict_status_line_and_content_length():
    from stream_app.core.http import parse_head
    assert parse_head(b"HTTP/1.10 200 OK", False) is None  # not HTTP-version SP 3DIGIT
    assert parse_head(b"HTTP/1.1 +20 OK", False) is None
    assert parse_head(b"HTTP/1.1 204 No Content", False)[0] == 204
    for bad in (b"+5", b"1_0", b"-0", b"5, 5", b"0x10", b"\x1c10"):
        got = parse_head(b"POST / HTTP/1.1\r\nContent-Length: " + bad, True)
        assert got[3] is None and "bad_content_length" in got[5], bad
    assert parse_head(b"POST / HTTP/1.1\r\nContent-Length: 0007", True)[3] == 7
    assert parse_head(b"POST / HTTP/1.1\r\nContent-Length: " + b"0" * 40 + b"12", True)[3] == 12
