"""The C parse_head (stream_app/_fasthttp.c) against the reference (stream_app.core.http.parse_head).

Contract: for every head and both directions, the C version either returns DECLINE (and then
only for the rare inputs it documents: obsolete line folding, a Content-Length of over 640
digits, a head that is not bytes) or a result equal to the Python one, with the same types all
the way down (int vs bool, list vs tuple, str vs None); the common heads are not declined; the
framer really uses it; nothing leaks.
"""

from __future__ import annotations

import gc
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import stream_app.core.http as http
from stream_app.core.http import MAX_URI, HttpConfig, HttpConversation, parse_head

try:
    from stream_app import _fasthttp as fh
except ImportError as _exc:  # every test fails with this, rather than the whole session
    fh = None
    _IMPORT_ERROR = str(_exc)

ROOT = Path(__file__).resolve().parents[1]
ZEEK_HTTP = ROOT.parent / "shared" / "corpus" / "zeek-http"

HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True)
def _extension_built():
    if fh is None:
        pytest.fail(f"stream_app._fasthttp is not built ({_IMPORT_ERROR}): "
                    "pip install -e . or build_ext --inplace", pytrace=False)


def same(x, y) -> bool:
    """== with the same types at every level (1 == True and [] == () would hide a difference)."""
    if type(x) is not type(y):
        return False
    if isinstance(x, (tuple, list)):
        return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y))
    return x == y


def may_decline(head: bytes) -> bool:
    """The inputs the C version is allowed to leave to Python."""
    eol = head.find(b"\n")
    rest = b"" if eol == -1 else head[eol:]
    if b"\n " in rest or b"\n\t" in rest:
        return True
    return any(name == b"content-length" and sum(48 <= ch <= 57 for ch in value) > 640
               for name, value in http._headers(rest))


def check(head: bytes) -> int:
    """Assert the contract for both directions; returns how many were declined."""
    declined = 0
    for is_request in (True, False):
        got = fh.parse_head(head, is_request)
        if got is fh.DECLINE:
            assert may_decline(head), (head, is_request)
            declined += 1
            continue
        want = parse_head(head, is_request)
        assert same(got, want), (head, is_request, got, want)
    return declined


# -- the common heads: equal and never declined -------------------------------------------------

COMMON = [
    (b"GET /small.html HTTP/1.1\r\nHost: 198.18.0.1\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*", True),
    (b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*", True),
    (b"POST /api/v1/items HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: python-requests/2.31\r\n"
     b"Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n"
     b"Content-Type: application/json\r\nContent-Length: 27\r\nAuthorization: Bearer abc.def\r\n"
     b"Cookie: a=1; b=2\r\nReferer: https://example.com/", True),
    (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 05:02:00 GMT\r\n"
     b"Content-Type: text/html\r\nContent-Length: 200\r\nLast-Modified: Fri, 27 Nov 2026 05:01:00 GMT\r\n"
     b"Connection: keep-alive\r\nETag: \"x\"\r\nAccept-Ranges: bytes", False),
    (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\nConnection: keep-alive", False),
    (b"HTTP/1.1 302 Found\r\nLocation: /login\r\nSet-Cookie: sid=abc; Path=/; HttpOnly\r\n"
     b"Set-Cookie: csrf=xyz; Path=/\r\nContent-Length: 0", False),
    (b"HTTP/1.0 404 Not Found\nContent-Type: text/plain\nContent-Length: 9", False),
    (b"HTTP/1.1 204 No Content", False),
]


@pytest.mark.parametrize("head,is_request", COMMON)
def test_common_heads_not_declined(head, is_request):
    got = fh.parse_head(head, is_request)
    assert got is not fh.DECLINE
    assert same(got, parse_head(head, is_request))
    assert got[0] is not None and (got[6] or not is_request)
    check(head)


def test_framer_uses_the_c_version():
    assert http._parse_head is fh.parse_head
    assert http._DECLINE is fh.DECLINE


def test_declined_head_through_the_framer():
    """An obs-fold Transfer-Encoding is declined by C and read by Python: chunked framing."""
    head = b"POST / HTTP/1.1\r\nHost: target\r\nTransfer-Encoding:\r\n chunked"
    assert fh.parse_head(head, True) is fh.DECLINE
    assert parse_head(head, True)[4] is True
    conv = HttpConversation(HttpConfig())
    conv.requests.data(head + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 1)
    conv.responses.data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 2)
    (txn,) = conv.take()
    assert (txn.method, txn.host, txn.req_body, txn.status, txn.resp_body) == ("POST", "target", 5, 200, 2)


def test_framer_same_transactions_both_paths(monkeypatch):
    stream_req = b"".join(h + b"\r\n\r\n" for h, r in COMMON if r) + b"GET /x HTTP/1.1\r\n\r\n"
    stream_resp = (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nabc"
                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                   b"HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n"
                   b"HTTP/1.1 304 Not Modified\r\n\r\n")

    def run():
        conv = HttpConversation(HttpConfig(keep_credentials=True))
        conv.requests.data(stream_req, 1)
        conv.responses.data(stream_resp, 2)
        # The transaction's fields, not its methods (bound methods differ per object).
        return [{k: v for k in dir(t) if not k.startswith("_") and k != "tag"
                 and not callable(v := getattr(t, k))}
                for t in conv.finish()]

    with_c = run()
    monkeypatch.setattr(http, "_parse_head", parse_head)
    assert with_c == run()
    assert len(with_c) == 4


# -- exact details ----------------------------------------------------------------------------

EDGE = [
    b"", b"\n", b"\r\n", b"\r", b"G", b"GET", b"GET ", b" GET / HTTP/1.1", b"GET\t/\tHTTP/1.1",
    b"GET / HTTP/1.1 extra", b"GET  /  HTTP/1.1", b"GET / http/1.1", b"GET / HTTP/", b"GET / HTTP",
    b"get /\xff\xfe HTTP/1.1", b"G\xc3\xa9T / HTTP/1.1", b"1GET / HTTP/1.1", b"_GET / HTTP/1.1",
    b"A" * 20 + b" / HTTP/1.1", b"A" * 21 + b" / HTTP/1.1", b"M-SEARCH * HTTP/1.1", b"CCM_POST / HTTP/1.1",
    b"GET /a\x0bb HTTP/1.1", b"GET /a\x1cb HTTP/1.1", b"GET /a\x00b HTTP/1.1", b"GET /a\rb HTTP/1.1",
    b"GET / HTTP/1.1\r\r\r", b"GET / HTTP/1.1\r\r\nHost: x",
    b"GET / HTTP/1.1\x85", b"GET / HTTP/1.1\xa0",
    b"GET /" + b"a" * (MAX_URI - 2) + "é".encode() + b" HTTP/1.1",  # é straddles MAX_URI
    b"GET /" + b"a" * (MAX_URI + 100) + b" HTTP/1.1",
    b"HTTP/1.1 200 OK", b"HTTP/1.1 200", b"HTTP/1.1 200 ", b"HTTP/1.1 20", b"HTTP/1.1 2_0 OK",
    b"HTTP/1.1 +20 OK", b"HTTP/1.1 -20 OK", b"HTTP/1.1  20 OK", b"HTTP/1.1 20  OK", b"HTTP/1.1 -0 x",
    b"HTTP/1.1 _20 x", b"HTTP/1.1 20_ x", b"HTTP/1.1 \x0b20 x", b"HTTP/1.1 \x1c20 x", b"HTTP/1.1 +_2 x",
    b"HTTP/1.1 \r20 x", b"HTTP/1.1 2\xd9\xa0 x", b"HTTP/1.1 abc x", b"HTTP/1.1 1000 x", b"HTTP/1.1X200 OK",
    b"HTTP/1.1 200 \xff\xfe caf\xc3\xa9", b"HTTP/\xc3\xa9.1 200 OK", b"HTTP/1.1 200 OK\r\r",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r",  # the lone CR at the end: header not matched
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\r\nContent-Type: a\rb\nSet-Cookie: c \t\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 5\n", b"HTTP/1.1 200 OK\nContent-Length: 5\n\n",
    b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\nContent-Length\t:\t6 \t", b"HTTP/1.1 200 OK\r\nContent-Length\x0b: 5",
    b"HTTP/1.1 200 OK\r\nContent-Length2: 5\r\nXContent-Length: 5\r\n Content-Length: 7",
    b"HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh:5\r\nTRANSFER-ENCODING:gzip,CHUNKED",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: -1",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\nContent-Length: x\r\nContent-Length: 7",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\nContent-Length: 5\r\nContent-Length: 6",
    b"HTTP/1.1 200 OK\r\nContent-Length: 4611686018427387904", b"HTTP/1.1 200 OK\r\nContent-Length: 4611686018427387905",
    b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615", b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616",
    b"HTTP/1.1 200 OK\r\nContent-Length: 46116860184273879040", b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0" + b"0" * 639, b"HTTP/1.1 200 OK\r\nContent-Length: 0" + b"0" * 700 + b"5",
    b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000, b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0_" * 400 + b"1",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nhost:\r\nHOST:  \t \r\nHost:x y \t\r\nhost :z",
    b"GET / HTTP/1.1\r\nSet-Cookie: a\r\nContent-Type: t\r\nReferer: r\r\nAuthorization: Basic x\r\n"
    b"Proxy-Authorization: p\r\nCookie: c\r\nUser-Agent: \xff\xc3(\xe2\x82",
    b"GET / HTTP/1.1\r\nHost: x\r\n\tfolded", b"GET / HTTP/1.1\n host", b"GET / HTTP/1.1\r\nHost: x\r\n",
]


@pytest.mark.parametrize("head", EDGE)
def test_edges(head):
    check(head)


@pytest.mark.parametrize("value", [
    b"5", b"+5", b"-5", b"-0", b"+0", b"007", b"1_000", b"1__0", b"_1", b"1_", b"+_1", b"- 1", b"5 5",
    b" 5 ", b"\x0b5\x0c", b"\x1c5\x1f", b"\x1d\x1e5", b"5\x00", b"\xc2\xa05", b"\xef\xbc\x95", b"\x855",
    b"", b"0x10", b"1e3", b"5,5", b"5;", b"\t5\t", b"5\r6",
])
def test_content_length_values(value):
    check(b"HTTP/1.1 200 OK\r\nContent-Length: " + value)
    check(b"POST / HTTP/1.1\r\nContent-Length:" + value + b"\r\nHost: h")


@settings(max_examples=400, **HYP)
@given(st.lists(st.sampled_from(b"0123456789_+- \t\x0b\x0c\x1c\x1f\x85\xa0x"), max_size=12).map(bytes))
def test_content_length_like_int(value):
    check(b"HTTP/1.1 200 OK\r\nContent-Length:" + value)
    check(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\nTransfer-Encoding: chunked")


@settings(max_examples=400, **HYP)
@given(st.lists(st.sampled_from(b"0123456789_+- \t\r\x0b\x0c\x1c\x00\xd9x"), min_size=3, max_size=3).map(bytes),
       st.binary(max_size=3))
def test_status_like_int(status, after):
    check(b"HTTP/1.1 " + status + after)


# -- heads built from realistic pieces, then mutated -----------------------------------------

METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"PROPFIND", b"QUERY",
           b"CCM_POST", b"M-SEARCH", b"get", b"A" * 20, b"A" * 21, b"1GET", b"G\xc3\xa9T", b"_X", b"X"]
URIS = [b"/", b"/index.html?a=b&c=d", b"*", b"http://example.com:8080/p", b"example.com:443", b"/\xff\xfe",
        b"/caf\xc3\xa9", b"/%20x", b"/a\x00b", b"/a\x1cb", b"/\xc3", b"/" + b"x" * 300, b""]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2", b"HTTP/", b"http/1.1", b"HTTP/1.1\xff",
            b"HTTPS/1.1", b"HTTP/\xc3\xa9", b""]
SEPS = [b" ", b" ", b" ", b"  ", b"\t", b"\x0b", b"\x0c", b"\r", b" \r", b"\x1c", b""]
EOLS = [b"\r\n"] * 7 + [b"\n"] * 3 + [b"\r\r\n", b"\r", b"\n\r"]
WANTED = [b"Content-Length", b"Transfer-Encoding", b"Host", b"User-Agent", b"Referer", b"Content-Type",
          b"Authorization", b"Proxy-Authorization", b"Cookie", b"Set-Cookie"]
OTHER = [b"Accept", b"Hostname", b"X-Host", b"Content-Lengthy", b"Cookie2", b"Set-Cookie2", b"Server",
         b"Date", b"Connection", b"Content", b"", b"Transfer-Encodin"]
NAME_GAP = [b"", b"", b" ", b"\t", b" \t ", b"\x0b"]
VALUE_GAP = [b"", b" ", b" ", b"\t\t", b"  \t"]
LENGTHS = [b"0", b"5", b"200", b"+5", b"-5", b"-0", b"1_000", b"1__0", b"_1", b" 5 ", b"\x1c5", b"5,5", b"x",
           b"4611686018427387904", b"4611686018427387905", b"18446744073709551616", b"9" * 40, b"",
           b"\xef\xbc\x95", b"0" * 700 + b"1"]
TE = [b"chunked", b"Chunked", b"gzip, chunked", b"CHUNKED ", b"identity", b"chunke", b"xchunkedx", b""]
TEXTS = [b"example.com", b"Mozilla/5.0 (X11; Linux x86_64)", b"\xff\xfe", b"caf\xc3\xa9", b"\xc3", b"a\rb",
         b"v \t ", b"\t v", b"", b"a" * 10000, b"sid=1; Path=/", b"\xe2\x82\xac\xf0\x9f\x98\x80", b"a\x00b"]
STATUS = [b"200", b"204", b"301", b"404", b"100", b"101", b"2_0", b"+20", b" 20", b"-1_", b"abc", b"20"]
REASONS = [b" OK", b" Not Found", b"", b" ", b" \xff\xfe", b"  OK", b"\tOK"]


@st.composite
def header_line(draw):
    name = draw(st.sampled_from(WANTED * 2 + OTHER))
    mask = draw(st.integers(0, (1 << 20) - 1))  # which letters change case
    name = bytes(c ^ 0x20 if chr(c).isalpha() and mask >> i & 1 else c for i, c in enumerate(name))
    kind = name.lower()
    if kind == b"content-length":
        value = draw(st.sampled_from(LENGTHS))
    elif kind == b"transfer-encoding":
        value = draw(st.sampled_from(TE))
    else:
        value = draw(st.sampled_from(TEXTS) | st.binary(max_size=20))
    fold = draw(st.sampled_from([b""] * 12 + [b"\r\n folded", b"\n\tmore"]))
    return (name + draw(st.sampled_from(NAME_GAP)) + draw(st.sampled_from([b":"] * 8 + [b"", b";"]))
            + draw(st.sampled_from(VALUE_GAP)) + value + draw(st.sampled_from(VALUE_GAP)) + fold)


@st.composite
def heads(draw):
    if draw(st.booleans()):
        parts = [draw(st.sampled_from(METHODS)), draw(st.sampled_from(URIS)), draw(st.sampled_from(VERSIONS))]
        parts = parts[:draw(st.integers(1, 3))] + draw(st.sampled_from([[], [], [], [b"extra"]]))
        first = draw(st.sampled_from(SEPS[:3] + [b""])) * draw(st.integers(0, 1))
        for i, p in enumerate(parts):
            first += (draw(st.sampled_from(SEPS)) if i else b"") + p
    else:
        first = (b"HTTP/" + draw(st.sampled_from([b"1.1", b"1.0", b"2.0", b"\xc3\xa9.", b"1.", b"x"]))
                 + draw(st.sampled_from([b" ", b" ", b"\t", b"X", b""])) + draw(st.sampled_from(STATUS))
                 + draw(st.sampled_from(REASONS)))
    lines = draw(st.lists(header_line(), min_size=draw(st.integers(0, 1)), max_size=8))
    head = first
    for line in lines:
        head += draw(st.sampled_from(EOLS)) + line
    if draw(st.integers(0, 9)) == 0:
        head += draw(st.sampled_from(EOLS))
    return head


@st.composite
def mutated(draw):
    head = bytearray(draw(heads()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, len(head)))
        if op == 0:
            head[i:i] = draw(st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\x0b", b"_", b"+",
                                              b"-", b"0", b"9", b"\xff", b"\xc3", b"\x00", b"\n "]))
        elif op == 1:
            del head[i:i + draw(st.integers(1, 5))]
        elif op == 2:
            head[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del head[i:]
    return bytes(head)


@settings(max_examples=1200, **HYP)
@given(heads())
@example(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nHost: b")
def test_built_heads(head):
    check(head)


@settings(max_examples=1200, **HYP)
@given(mutated())
def test_mutated_heads(head):
    check(head)


@settings(max_examples=1000, **HYP)
@given(st.binary(max_size=300))
def test_random_bytes(head):
    check(head)
    check(b"HTTP/1.1 " + head)
    check(b"GET / HTTP/1.1\r\n" + head)


def test_seeded_fuzz_80k():
    """A seeded random mix of the pieces above (many more than hypothesis draws)."""
    rnd = random.Random(20261127)
    junk = b"\r\n \t:\x0b\x0c\x1c_+-09\xff\xc3\x00xX"
    declined = 0
    for _ in range(80_000):
        if rnd.random() < 0.5:
            first = rnd.choice(SEPS[:3] + [b""]).join([rnd.choice(METHODS), rnd.choice(URIS), rnd.choice(VERSIONS)][:rnd.randint(1, 3)])
        else:
            first = b"HTTP/" + rnd.choice([b"1.1", b"1.0", b"\xc3\xa9."]) + b" " + rnd.choice(STATUS) + rnd.choice(REASONS)
        head = bytearray(first)
        for _ in range(rnd.randint(0, 10)):
            name = rnd.choice(WANTED * 3 + OTHER)
            name = bytes(c ^ 0x20 if chr(c).isalpha() and rnd.random() < 0.3 else c for c in name)
            low = name.lower()
            value = (rnd.choice(LENGTHS) if low == b"content-length" else rnd.choice(TE) if low == b"transfer-encoding"
                     else rnd.choice(TEXTS))
            head += rnd.choice(EOLS) + name + rnd.choice(NAME_GAP) + b":" + rnd.choice(VALUE_GAP) + value + rnd.choice(VALUE_GAP)
        for _ in range(rnd.choice([0, 0, 1, 2, 3])):
            i = rnd.randint(0, len(head))
            if rnd.random() < 0.6:
                head[i:i] = bytes(rnd.choice(junk) for _ in range(rnd.randint(1, 3)))
            else:
                del head[i:i + rnd.randint(1, 6)]
        declined += check(bytes(head))
    assert declined < 80_000 * 2 * 0.2


# -- the real HTTP corpus ------------------------------------------------------------------------

def test_zeek_http_corpus_heads(monkeypatch, tmp_path):
    from stream_app.adapters.embedded import analyze

    files = sorted(p for p in ZEEK_HTTP.glob("*") if p.is_file() and p.suffix not in (".md", ".json"))
    if not files:
        pytest.skip(f"no corpus under {ZEEK_HTTP}")
    seen = []

    def record(head, is_request):
        seen.append((head, is_request))
        return parse_head(head, is_request)

    monkeypatch.setattr(http, "_parse_head", record)
    for i, p in enumerate(files):
        analyze([p], tmp_path / str(i))
    assert len(seen) > 1000
    declined = 0
    for head, is_request in set(seen):
        got = fh.parse_head(head, is_request)
        if got is fh.DECLINE:
            assert may_decline(head)
            declined += 1
            continue
        assert same(got, parse_head(head, is_request)), (head, is_request)
    assert declined <= 5


# -- errors, refcounts, leaks ------------------------------------------------------------------

def test_arguments():
    assert fh.parse_head(bytearray(b"GET / HTTP/1.1"), True) is fh.DECLINE
    assert fh.parse_head("GET / HTTP/1.1", True) is fh.DECLINE
    with pytest.raises(TypeError):
        fh.parse_head(b"GET / HTTP/1.1")
    with pytest.raises(TypeError):
        fh.parse_head(b"GET / HTTP/1.1", True, 1)

    class Bad:
        def __bool__(self):
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fh.parse_head(b"GET / HTTP/1.1", Bad())
    assert same(fh.parse_head(b"GET / HTTP/1.1\r\nHost: h", 1), parse_head(b"GET / HTTP/1.1\r\nHost: h", 1))
    assert same(fh.parse_head(b"HTTP/1.1 200 OK", 0), parse_head(b"HTTP/1.1 200 OK", 0))


def test_no_leaks_200k():
    heads = [h for h, _ in COMMON] + EDGE[:60] + [b"GET / HTTP/1.1\r\nHost: x\r\n\tfolded",
                                                  b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * 700]
    calls = [(h, r) for h in heads for r in (True, False)]
    watched = heads + [fh.DECLINE, "host", "user_agent", "resp_ctype", "set_cookie", "malformed_request",
                       "bad_content_length", "conflicting_content_length", "te_and_cl"]
    f = fh.parse_head
    for h, r in calls:  # warm up caches (interned strings, small ints)
        f(h, r)
    gc.collect()
    refs = [sys.getrefcount(o) for o in watched]
    blocks = sys.getallocatedblocks()
    n = 0
    while n < 200_000:
        for h, r in calls:
            f(h, r)
        n += len(calls)
    gc.collect()
    assert sys.getallocatedblocks() - blocks < 200
    assert [sys.getrefcount(o) for o in watched] == refs
