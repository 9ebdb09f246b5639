"""The C HTTP connection (stream_app/_fastconn.c, FastHttp) against the Python analyzer it
stands in for (stream_app.core.l7.HttpAnalyzer with stream_app.core.http's framer).

FastHttp follows a connection while it is in order and plain, and hands over to an
HttpAnalyzer built from its state at the first thing it does not do itself. The records must
therefore be the same, field for field and in the same order, whatever the input:
- every corpus capture and the bundled sample, through `analyze` (every output file equal
  byte for byte);
- the corpus's HTTP captures with mirror-like reordering, in batches of random sizes, with a
  snapshot and restore of the whole state at every batch boundary (a FastHttp's stored form
  is the Python analyzer's);
- generated conversations (hypothesis): pipelining, HEAD, 1xx, 204/304, CONNECT, chunked and
  unframed bodies, credentials, heads split anywhere, reordered, lost and truncated segments.
A test also shows that the C path is the one taken on ordinary traffic (it is not bailing out
on everything), so the benchmark's gain is real.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.core import l7 as l7_mod
from stream_app.core.flowtable import FlowConfig
from stream_app.core.http import HttpConfig
from stream_app.core.l7 import L7Config
from stream_app.core.processor import CoreConfig, Processor
from tests.conftest import CORPUS, SAMPLE, corpus_files
from tests.state_cases import records_of
from tests.test_http import Conn

HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])


@pytest.fixture(autouse=True)
def _built():
    assert l7_mod.FastHttp is not None, (
        "stream_app._fastconn is not built, or MIRRORSCOPE_FAST_HTTP=0: nothing to compare "
        "(bash .ci/setup.sh builds it)")


class python_only:
    """Within: new L7 engines analyse HTTP with HttpAnalyzer alone."""

    def __enter__(self):
        self.saved = l7_mod.FastHttp
        l7_mod.FastHttp = None

    def __exit__(self, *exc):
        l7_mod.FastHttp = self.saved


def both(fn):
    """fn() with the C connections, then with the Python analyzer alone."""
    got = fn()
    with python_only():
        want = fn()
    return got, want


# -- captures ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [*corpus_files(), SAMPLE],
                         ids=lambda p: p.name if p == SAMPLE else str(p.relative_to(CORPUS)))
def test_analyze_writes_the_same_files(path: Path, tmp_path):
    from stream_app.adapters.embedded import analyze

    def run():
        out = tmp_path / "out"
        shutil.rmtree(out, ignore_errors=True)
        res = analyze([path], out)
        files = {p.name: p.read_bytes() for p in sorted(out.glob("*.jsonl"))}
        return files, res.core
    (got, got_core), (want, want_core) = both(run)
    assert got.keys() == want.keys()
    for name in got:
        assert got[name] == want[name], name
    assert got_core == want_core


HTTP_CAPTURES = ["zeek__wikipedia.pcap", "dpkt__http.pcap", "zeek__http_methods.pcap",
                 "sv__http-all-headers__input.pcap", "dpkt__nb6-http.pcap",
                 "zeek-http/100-continue.pcap", "zeek-http/get_nosyn.pcap",
                 "zeek-http/curl_http_09.pcap", "zeek-http/connect-with-header.pcap",
                 "zeek__vxlan-encapsulated-http.pcap"]


def _replay(recs, seed: int, restore: bool):
    """Records in batches of random sizes; with ``restore``, the state is stored and read
    back (stream_app/state/codec.py) at every batch boundary."""
    from stream_app.state.codec import Codec
    rng = random.Random(seed)
    config = CoreConfig(flows=FlowConfig(), l7=L7Config(), detect=None)
    proc = Processor(config)
    codec = Codec(b"k" * 32)
    out = []
    i = 0
    while i < len(recs):
        n = rng.randint(1, 40)
        res = proc.process(recs[i:i + n])
        out.append((res.flows, res.http))
        i += n
        if restore:
            flows = list(proc.flows.flows.values())
            blobs = [codec.dumps(f, proc) for f in flows]
            now = proc.flows.now_ns
            fresh = Processor(config)
            fresh.flows.adopt(codec.loads_many(blobs, fresh), now)
            proc = fresh
    end = proc.finish()
    out.append((end.flows, end.http))
    return out


@pytest.mark.parametrize("restore", [False, True], ids=["in-memory", "restored-each-batch"])
@pytest.mark.parametrize("seed", [0, 3, 7])
@pytest.mark.parametrize("capture", HTTP_CAPTURES)
def test_reordered_batches_give_the_same_records(capture, seed, restore):
    if not (CORPUS / capture).is_file():
        pytest.fail(f"{CORPUS / capture}: missing from the corpus")
    recs = records_of(capture, seed)
    got, want = both(lambda: _replay(recs, seed, restore))
    assert got == want


# -- generated conversations --------------------------------------------------------------------

SECRET_URIS = ["/a", "/b?x=1", "/login?token=abc&user=me", "/token/s3cr3t/x",
               "http://u:p@host/p", "/bot123456:AAbbccddeeffgghhiijjkkll/send"]


@st.composite
def exchange(draw):
    """One request and its response, as the bytes each side sends."""
    method = draw(st.sampled_from(["GET", "GET", "POST", "HEAD", "CONNECT", "QUERY"]))
    uri = draw(st.sampled_from(SECRET_URIS))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", ""]))
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
    hdrs = [b"Host: " + draw(st.sampled_from([b"h", b"u:p@h"]))]
    if draw(st.booleans()):
        hdrs.append(b"Cookie: a=1; b=2")
    if draw(st.booleans()):
        hdrs.append(b"Authorization: Bearer xyz")
    if draw(st.booleans()):
        hdrs.append(b"Referer: http://r/?password=1")
    body = b""
    kind = draw(st.sampled_from(["none", "length", "length", "chunked", "bad"]))
    if kind == "length":
        body = b"q" * draw(st.integers(0, 3000))
        hdrs.append(b"Content-Length: %d" % len(body))
    elif kind == "chunked":
        hdrs.append(b"Transfer-Encoding: chunked")
        body = b"5\r\nhello\r\n0\r\n\r\n"
    elif kind == "bad":
        hdrs.append(b"Content-Length: -1")
    line = f"{method} {uri} {version}".rstrip().encode()
    blank = draw(st.sampled_from([eol, eol, b"\n"]))  # CRLF lines, then a bare-LF blank line
    req = line + b"".join(eol + h for h in hdrs) + eol + blank + body
    status = draw(st.sampled_from([200, 200, 200, 404, 204, 304, 100, 101]))
    rh = [b"Content-Type: text/plain"]
    if draw(st.booleans()):
        rh.append(b"Set-Cookie: s=1")
        rh.append(b"Set-Cookie: t=2")
    rbody = b""
    rkind = draw(st.sampled_from(["length", "length", "length", "chunked", "close"]))
    if rkind == "length":
        rbody = b"r" * draw(st.integers(0, 5000))
        rh.append(b"Content-Length: %d" % len(rbody))
    elif rkind == "chunked":
        rh.append(b"Transfer-Encoding: chunked")
        rbody = b"3\r\nabc\r\n0\r\n\r\n"
    resp = b"HTTP/1.1 %d X" % status + b"".join(b"\r\n" + h for h in rh) + b"\r\n\r\n" + rbody
    if status == 100:  # an interim response, then the final one
        resp += b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    return req, resp


def _segments(data: bytes, draw) -> list[bytes]:
    if not data:
        return []
    if len(data) < 2 or draw(st.booleans()):
        return [data[i:i + 1448] for i in range(0, len(data), 1448)]
    points = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=12))))
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@st.composite
def connection(draw):
    exchanges = draw(st.lists(exchange(), min_size=1, max_size=5))
    pipelined = draw(st.booleans())
    c = Conn(t0=draw(st.integers(0, 10**9))).handshake()
    if pipelined:
        for seg in _segments(b"".join(r for r, _ in exchanges), draw):
            c.c(seg)
        for seg in _segments(b"".join(s for _, s in exchanges), draw):
            c.s(seg)
    else:
        for req, resp in exchanges:
            for seg in _segments(req, draw):
                c.c(seg)
            for seg in _segments(resp, draw):
                c.s(seg)
    if draw(st.booleans()):
        c.close()
    pkts = list(c.pkts)
    # What a mirror and a capture do to the copies: reorder neighbours, lose some, cut some.
    rng = random.Random(draw(st.integers(0, 2**32)))
    reorder, lose, cut = (draw(st.sampled_from([0.0, 0.0, 0.05, 0.2])) for _ in range(3))
    out = []
    for p in pkts:
        if rng.random() < lose:
            continue
        if p.payload_len and rng.random() < cut:
            p.payload = p.payload[:rng.randint(0, p.payload_len - 1)]
        out.append(p)
    for i in range(len(out) - 1):
        if rng.random() < reorder:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _http(pkts, keep: bool, batch: int):
    http = HttpConfig(keep_credentials=keep)
    proc = Processor(CoreConfig(flows=FlowConfig(), l7=L7Config(http=http), detect=None))
    out = []
    for i in range(0, len(pkts), batch):
        out.append(proc.process(pkts[i:i + batch]).http)
    out.append(proc.finish().http)
    return out, proc.stats()


@settings(max_examples=300, **HYP)
@given(connection(), st.booleans(), st.integers(1, 50))
def test_generated_connections_give_the_same_records(pkts, keep, batch):
    got, want = both(lambda: _http(pkts, keep, batch))
    assert got == want


@settings(max_examples=3000, **HYP)
@given(st.one_of(st.integers(0, 2**63 - 1), st.integers(0, 2**53 + 10**6),
                 st.integers(1_000_000_000 * 10**9, 2_000_000_000 * 10**9), st.integers(-2**63, -1)))
def test_record_times_are_pythons_division(ns):
    """The C records' ts and latency: the double Python's ns / 10**9 gives, bit for bit."""
    from stream_app import _fastconn
    assert _fastconn._seconds(ns) == ns / 10**9


# -- the C path is the one taken ------------------------------------------------------------------

def test_ordinary_traffic_stays_in_c(monkeypatch):
    """On real browser and curl/nginx traffic (zeek__wikipedia, and the bundled sample made
    through the mirror lab) no HTTP connection is handed to the Python analyzer."""
    from collectors.capture import open_capture
    from collectors.decode import Decoder
    from collectors.source import capture_batches
    from stream_app.adapters.embedded import payload_policy
    handed = []
    real = l7_mod.L7._materialize
    monkeypatch.setattr(l7_mod.L7, "_materialize",
                        lambda self, fa: handed.append(fa) or real(self, fa))
    n = 0
    for path in (SAMPLE, CORPUS / "zeek__wikipedia.pcap"):
        recs = []
        for batch in capture_batches(open_capture(path),
                                     Decoder(payload=payload_policy(L7Config()))):
            recs.extend(batch)
        proc = Processor(CoreConfig(detect=None))
        http = proc.process(recs).http + proc.finish().http
        assert http
        n += proc.l7.http_flows
    assert n >= 10
    assert not handed, f"{len(handed)} of {n} HTTP connections left the C path"
