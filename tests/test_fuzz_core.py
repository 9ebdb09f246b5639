"""The fuzzing tier of the stream core (issue 20): the HTTP framer, TCP reassembly and the
flow table under hostile input, with hypothesis.

Properties, each over generated input:
- the framer never raises, never holds more than MAX_HEADER_BYTES plus a segment, and frames
  a well-formed stream the same however it is cut into segments (one byte each included);
- heads from 64 KiB to 50 MB are recorded once, tagged head_too_large, and the request after
  them is still read; 10k headers under the limit are parsed (a Content-Length after them
  honoured);
- chunked bodies with any chunk sizes, extensions and cuts count exactly their bytes;
- reassembly delivers the stream exactly, in any order, with duplicates and overlaps, across
  the 2**32 sequence wrap; a jump beyond any window is a gap, never lost data after it;
- the flow table never raises on arbitrary packet records (odd flags, ports, clocks stepping
  back, random payloads, a tiny flow cap) and every packet is counted in exactly one record.

MIRRORSCOPE_FUZZ_EXAMPLES multiplies the example counts (bench/fuzz_core.py runs it long).
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.records import PacketRecord
from stream_app.core.flowtable import FlowConfig
from stream_app.core.http import MAX_HEADER_BYTES, HttpConfig, HttpConversation
from stream_app.core.processor import CoreConfig, Processor
from stream_app.core.reassembly import Direction
from stream_app.core.detectors import DetectConfig

SCALE = max(1, int(os.environ.get("MIRRORSCOPE_FUZZ_EXAMPLES", "1")))
HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.large_base_example])


def ex(n: int) -> int:
    return n * SCALE


# -- generators ---------------------------------------------------------------------------------

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
                min_size=1, max_size=12).map(str.encode)
VALUE = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b"\r\n"))


@st.composite
def message(draw, request: bool) -> tuple[bytes, int]:
    """One well-formed message and its body length."""
    headers = draw(st.lists(st.tuples(TOKEN, VALUE), max_size=8))
    headers = [(k, v) for k, v in headers
               if k.lower() not in (b"content-length", b"transfer-encoding")]
    body_kind = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    n = 0
    if body_kind == "length":
        n = draw(st.integers(0, 3000))
        headers.append((b"Content-Length", str(n).encode()))
        body = b"b" * n
    elif body_kind == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        sizes = draw(st.lists(st.integers(1, 700), max_size=6))
        for s in sizes:
            ext = draw(st.sampled_from([b"", b";x=1", b" ;y"]))
            hexs = draw(st.sampled_from(["%x", "%X", "%04x"])) % s
            body += hexs.encode() + ext + b"\r\n" + b"c" * s + b"\r\n"
        body += b"0\r\n" + draw(st.sampled_from([b"", b"T: 1\r\n"])) + b"\r\n"
        n = sum(sizes)
    if request:
        start = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE"])) + b" /" \
            + draw(TOKEN) + b" HTTP/1.1"
    else:
        code = draw(st.sampled_from([200, 201, 404, 500]))
        start = b"HTTP/1.1 %d X" % code
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    head = start + b"".join(eol + k + b": " + v for k, v in headers)
    return head + eol + eol + body, n


def cuts(data: bytes, draw) -> list[bytes]:
    """Pathological segmentation: one byte each, random cuts, or tiny and huge mixed."""
    mode = draw(st.sampled_from(["one", "random", "bytes"]))
    if mode == "one" or len(data) < 2:
        return [data]
    if mode == "bytes" and len(data) <= 4000:
        return [data[i:i + 1] for i in range(len(data))]
    points = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=40))))
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def frame(segments: list[bytes], request: bool = True) -> tuple[list, int]:
    """Feed a framer the segments as the analyzer's fast path would; returns what it made
    and the largest buffer it held."""
    conv = HttpConversation(HttpConfig())
    stream = conv.requests if request else conv.responses
    biggest = 0
    for i, seg in enumerate(segments):
        stream.data(seg, i)
        biggest = max(biggest, len(stream.buf))
    stream.end(len(segments))
    txns = conv.finish()
    return [(t.method, t.uri, t.status, t.req_body, t.resp_body, tuple(t.tags)) for t in txns], biggest


# -- the HTTP framer ------------------------------------------------------------------------------

@settings(max_examples=ex(300), **HYP)
@given(st.lists(message(True), min_size=1, max_size=5), st.data())
def test_framing_does_not_depend_on_segmentation(msgs, data):
    stream = b"".join(m for m, _ in msgs)
    whole, _ = frame([stream])
    pieces, _ = frame(cuts(stream, data.draw))
    assert pieces == whole
    assert [t[3] for t in whole] == [n for _, n in msgs]


@settings(max_examples=ex(200), **HYP)
@given(st.lists(st.one_of(message(False).map(lambda m: m[0]), st.binary(max_size=300)),
                max_size=6), st.booleans(), st.data())
def test_garbage_never_raises_and_buffers_stay_bounded(parts, request, data):
    stream = b"".join(parts)
    segs = cuts(stream, data.draw)
    _, biggest = frame(segs, request)
    assert biggest <= MAX_HEADER_BYTES + max((len(s) for s in segs), default=0)


@settings(max_examples=ex(8), **HYP)
@given(st.integers(64 * 1024 + 1, 50 * 1024 * 1024), st.sampled_from([1448, 9001, 65535]),
       st.booleans())
def test_heads_from_64k_to_50mb(size, mss, lines):
    pad = (b"X-P: " + b"v" * 70 + b"\r\n") if lines else b"v"
    block = pad * (size // len(pad) + 1)
    stream = (b"GET /big HTTP/1.1\r\nHost: h\r\nX-A: " + block[:size] + b"\r\n\r\n"
              + b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
    segs = [stream[i:i + mss] for i in range(0, len(stream), mss)]
    got, biggest = frame(segs)
    assert [(m, u) for m, u, *_ in got] == [("GET", "/big"), ("GET", "/after")]
    assert "head_too_large" in got[0][5]
    assert biggest <= MAX_HEADER_BYTES + mss


@settings(max_examples=ex(10), **HYP)
@given(st.integers(1, 10_000), st.integers(0, 100), st.data())
def test_ten_thousand_headers(n, body, data):
    head = b"POST /h HTTP/1.1\r\n" + b"".join(b"h%d: v\r\n" % i for i in range(n))
    msg = head + b"Content-Length: %d\r\n\r\n" % body + b"x" * body
    stream = msg + b"GET /next HTTP/1.1\r\n\r\n"
    got, _ = frame(cuts(stream, data.draw))
    if len(head) + 22 <= MAX_HEADER_BYTES:
        assert got[0][:4] == ("POST", "/h", None, body)
    else:  # the Content-Length is past the first 64 KiB: tagged, and the next one still read
        assert "head_too_large" in got[0][5]
    assert got[-1][:2] == ("GET", "/next")


@settings(max_examples=ex(200), **HYP)
@given(st.lists(st.integers(1, 5000), max_size=8), st.data())
def test_chunked_bodies_count_exactly(sizes, data):
    body = b"".join(b"%x\r\n" % s + b"z" * s + b"\r\n" for s in sizes) + b"0\r\n\r\n"
    stream = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body + \
        b"GET /n HTTP/1.1\r\n\r\n"
    got, _ = frame(cuts(stream, data.draw))
    assert [(g[1], g[3]) for g in got] == [("/c", sum(sizes)), ("/n", 0)]


# -- reassembly -----------------------------------------------------------------------------------

class Collect:
    def __init__(self):
        self.buf = bytearray()
        self.gaps = 0

    def data(self, b, ts):
        self.buf += b

    def gap(self, n, ts):
        self.gaps += n

    def end(self, ts):
        pass


@settings(max_examples=ex(300), **HYP)
@given(st.binary(min_size=1, max_size=20_000), st.data())
def test_shuffled_duplicated_segments_across_the_wrap(payload, data):
    isn = data.draw(st.one_of(st.integers(0xFFFFFFFF - 30_000, 0xFFFFFFFF), st.integers(0, 2**32 - 1)))
    segs = cuts(payload, data.draw)
    offs = []
    o = 0
    for s in segs:
        offs.append((o, s))
        o += len(s)
    offs += [(a, payload[a:a + n]) for a, n in data.draw(
        st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(1, 3000)), max_size=8))]
    order = data.draw(st.permutations(offs))
    out = Collect()
    d = Direction(out, cap=1 << 30)
    d.syn(isn)
    for off, chunk in order:
        d.segment((isn + 1 + off) & 0xFFFFFFFF, chunk, len(chunk), 0)
    d.end(0)
    assert bytes(out.buf) == payload and out.gaps == 0


@settings(max_examples=ex(200), **HYP)
@given(st.integers(0, 2**32 - 1), st.integers(1 << 30, (1 << 32) - (1 << 30)),
       st.binary(min_size=1, max_size=500), st.binary(min_size=1, max_size=500))
def test_a_jump_beyond_any_window_keeps_what_follows(isn, jump, before, after):
    out = Collect()
    d = Direction(out)
    d.syn(isn)
    d.segment((isn + 1) & 0xFFFFFFFF, before, len(before), 0)
    d.segment((isn + 1 + len(before) + jump) & 0xFFFFFFFF, after, len(after), 0)
    d.end(0)
    assert bytes(out.buf) == before + after and out.gaps == jump and d.stats.jumps == 1


@settings(max_examples=ex(60), **HYP)
@given(st.integers(1, 3000), st.integers(0, 2**32 - 1), st.integers(0, 1000))
def test_random_sequence_numbers_never_raise(n, isn, seed):
    rnd = random.Random(seed)
    out = Collect()
    d = Direction(out, cap=rnd.choice([1000, 1 << 20]))
    for _ in range(n):
        if rnd.random() < 0.05:
            d.acked(rnd.randrange(2**32), 0)
        seq = rnd.choice([isn + rnd.randrange(100_000), rnd.randrange(2**32)]) & 0xFFFFFFFF
        size = rnd.randrange(1, 1500)
        d.segment(seq, b"q" * size, size + rnd.choice([0, 0, 10]), 0)
        assert d.pending_bytes <= d.cap
    d.end(0)
    assert not d.pending


# -- the flow table ---------------------------------------------------------------------------------

HTTPISH = [b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"\r\n\r\n",
           b"0\r\n\r\n", b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"]


@st.composite
def packets(draw):
    rnd = random.Random(draw(st.integers(0, 2**32)))
    n = draw(st.integers(1, 400))
    addrs = [bytes([10, 0, 0, i]) for i in range(1, 5)]
    out = []
    t = 10**18
    for _ in range(n):
        t += rnd.choice([1, 1000, 10**9, 10**11, -10**10])  # clocks step back too
        proto = rnd.choice([6, 6, 6, 17, 1, 132, 47])
        kind = rnd.random()
        payload = (rnd.choice(HTTPISH) if kind < 0.3 else rnd.randbytes(rnd.randrange(0, 200))
                   if kind < 0.6 else b"")
        out.append(PacketRecord(
            t, rnd.choice([None, 1, 2]), None, 4, rnd.choice(addrs), rnd.choice(addrs), proto,
            rnd.choice([0, 80, 1234, 65535]), rnd.choice([0, 80, 1234, 65535]),
            rnd.randrange(256), rnd.randrange(2**32), rnd.randrange(2**32),
            40 + len(payload), 40 + len(payload), len(payload), payload,
            rnd.random() < 0.05, rnd.random() < 0.05))
    return out


@settings(max_examples=ex(150), **HYP)
@given(packets(), st.integers(1, 50), st.booleans())
def test_flow_table_never_raises_and_counts_every_packet(pkts, max_flows, detect):
    core = Processor(CoreConfig(flows=FlowConfig(max_flows=max_flows),
                                detect=DetectConfig(max_keys=100) if detect else None))
    flows = []
    for i in range(0, len(pkts), 37):
        res = core.process(pkts[i:i + 37])
        flows += res.flows
        if i % 3 == 0:
            flows += core.tick().flows
    flows += core.finish().flows
    s = core.stats()
    assert s["packet_errors"] == s["l7_errors"] == s["detector_errors"] == 0, core.errors
    assert sum(f.packets for f in flows) == len(pkts)
    assert all(f.duration >= 0 for f in flows)
