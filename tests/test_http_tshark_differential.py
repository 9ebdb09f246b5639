"""Differential test against tshark's HTTP dissector: the (method, host, uri) of every request
and the status code of every response, on the public HTTP captures.

Every difference is either fixed or listed below with its reason (docs/http.md tells the
policies): a new difference, or a listed one that disappears, fails the test.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest

from tests.conftest import CORPUS, run

FILES = (sorted((CORPUS / "zeek-http").iterdir()) + sorted(CORPUS.glob("sv__http-*"))
         + [CORPUS / "dpkt__http.pcap", CORPUS / "zeek__wikipedia.pcap", CORPUS / "zeek__http_methods.pcap"])

ANY_PORT = "HTTP on a port tshark does not dissect as HTTP: we recognise HTTP by its bytes"
EXTENSION = "an extension method (QUERY) tshark does not know"
HTTP09 = "an HTTP/0.9 request (no version): we report it, tagged http09"
SMUGGLED = ("a request smuggled inside another's body by conflicting framing: we frame as "
            "RFC 9112 says (Transfer-Encoding over Content-Length) and report what follows")
GAP = "a response with a hole in its body: we report it, tagged gap; tshark drops it"
UPLOAD = "a request whose body tshark could not reassemble"
CRUFT = "malformed request lines the client sent: reported, tagged malformed_request"
TUNNEL = "the response to a request inside a CONNECT tunnel"
LOWER = ("a status line in lower case ('http/1.1 200 OK'): we read its status, as Zeek does, "
         "tagged lowercase_status_line; tshark does not see a response")
NO_TARGET = ("a request line without target ('GET HTTP/1.1'): tshark takes the version for the "
             "URI; we read it as Zeek does (empty URI, version 1.1), tagged malformed_request")

OVERLAP = ("a response whose retransmitted segments overlap: tshark's reassembly gives up "
           "('New fragment overlaps old data'), ours keeps the first copy")

# file -> (reason, requests only we report, responses only we report[, {tshark's reading of a
# request: ours}]). Nothing tshark reports may be missing from ours.
EXPECTED = {
    "206_example_b.pcap": (OVERLAP, {}, {206: 1}),
    "concurrent-range-requests.pcap": (OVERLAP, {}, {206: 1}),
    "261__variant-01-chunk_2pow64_overflow.pcap": (SMUGGLED, {("GET", "target", "/smuggled-chunk-2pow64"): 1}, {}),
    "261__variant-09-te_obs_fold.pcap": (SMUGGLED, {("GET", "target", "/smuggled-obsfold"): 1}, {}),
    "bro.org.pcap": (GAP, {}, {200: 1}),
    "content-range-gap-skip.pcap": (GAP, {}, {206: 1}),
    "content-range-gap.pcap": (GAP, {}, {206: 1}),
    "entity_gap.pcap": (GAP, {}, {200: 1}),
    "entity_gap2.pcap": (GAP, {}, {200: 1}),
    "get-to-ssh-server.pcap": (ANY_PORT, {("GET", "128.3.50.246", "/"): 1}, {}),
    "http-11-request-then-cruft.pcap": (CRUFT, {("T", None, "/"): 4}, {}),
    "http-single-conn-22.pcap": (ANY_PORT, {("GET", None, "/"): 1}, {200: 1}),
    "http-to-ssh.pcap": (ANY_PORT, {("GET", "127.0.0.1:22", "/"): 1}, {}),
    "http_09.pcap": (HTTP09 + "; 'GET ' (no URI) tagged malformed_request",
                     {("GET", None, "/zeek.html"): 1, ("POST", None, "/zeek.html"): 1,
                      ("GET", None, None): 1}, {}),
    "http-lower-case.pcap": (LOWER, {}, {200: 1}),
    "http-lower-case-nonstandard-port.pcap": (LOWER, {}, {200: 1}),
    "methods.pcap": (NO_TARGET, {}, {}, {("OPTIONS", "www.google.com", "HTTP/1.1"): ("OPTIONS", "www.google.com", "")}),
    "zeek__http_methods.pcap": (NO_TARGET, {}, {},
                                {("OPTIONS", "www.google.com", "HTTP/1.1"): ("OPTIONS", "www.google.com", "")}),
    "no-uri.pcap": (NO_TARGET, {}, {}, {("GET", "bro.org", "HTTP/1.1"): ("GET", "bro.org", "")}),
    "no-version.pcap": (HTTP09, {("GET", None, "/cgi-bin/formmail.pl?email=f2@aol.com&subject="
                                 "www-nrg.ee/cgi-bin/formmail.pl&recipient=unknownz@buy2save.com&msg=w00t"): 1}, {}),
    "putty-upload.pcap": (UPLOAD, {("POST", "localhost:8080", "/upload"): 1}, {}),
    "query-method-non-standard-port.pcap": (EXTENSION, {("QUERY", "example.com", "/users"): 1}, {}),
    "query-method.pcap": (EXTENSION, {("QUERY", "example.com", "/users"): 1}, {}),
    "zeek-image-post-1080-8000-x.pcap": (ANY_PORT, {("POST", "localhost:8000", "/"): 1}, {200: 1}),
    "sv__http-connect__http-connect-simple__input.pcap": (TUNNEL, {}, {200: 1}),
}


def _fields(tshark, path, display, *fields):
    out = subprocess.run([tshark, "-n", "-r", str(path), "-Y", display, "-T", "fields",
                          "-E", "occurrence=a", "-E", "aggregator=\x1f",
                          *[a for f in fields for a in ("-e", f)]],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def tshark_http(tshark, path):
    requests: Counter = Counter()
    for method, host, uri in _fields(tshark, path, "http.request", "http.request.method",
                                     "http.host", "http.request.uri"):
        # Several requests in one frame (pipelining) come aggregated; hosts may be absent.
        methods, uris = method.split("\x1f"), uri.split("\x1f")
        hosts = host.split("\x1f") if host else []
        hosts += [""] * (len(methods) - len(hosts))
        for m, h, u in zip(methods, hosts, uris + [""] * len(methods)):
            requests[(m or None, h or None, u or None)] += 1
    responses = Counter(int(c) for (codes,) in _fields(tshark, path, "http.response", "http.response.code")
                        for c in codes.split("\x1f") if c)
    return requests, responses


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_http_matches_tshark(path, tmp_path, tshark):
    t_req, t_resp = tshark_http(tshark, path)
    run([path], tmp_path)
    recs = [json.loads(line) for line in (tmp_path / "out" / "http.jsonl").read_text().splitlines()]
    o_req = Counter((r["method"], r["host"], r["uri"]) for r in recs if r["method"])
    o_resp = Counter(r["status_code"] for r in recs if r["status_code"] is not None)
    for r in recs:  # tshark lists interim (1xx) responses; we note them on the transaction
        o_resp.update(int(t[8:]) for t in r["tags"] if t.startswith("interim_"))
    reason, more_req, more_resp, *read_as = EXPECTED.get(path.name, ("", {}, {}))
    for theirs, ours in (read_as[0] if read_as else {}).items():
        assert t_req[theirs], f"tshark no longer reads {theirs}"
        t_req[ours] += t_req.pop(theirs)
    assert dict(t_req - o_req) == {}, f"requests only tshark found: {dict(t_req - o_req)}"
    assert dict(t_resp - o_resp) == {}, f"responses only tshark found: {dict(t_resp - o_resp)}"
    assert dict(o_req - t_req) == more_req, reason or "a difference that is not listed"
    assert dict(o_resp - t_resp) == more_resp, reason or "a difference that is not listed"
    if reason == GAP:
        assert any("gap" in r["tags"] for r in recs)


def test_vxlan_encapsulated_http_transaction_exactly(tmp_path):
    """The one exchange in the VXLAN capture, field by field as the capture holds it."""
    run([CORPUS / "zeek__vxlan-encapsulated-http.pcap"], tmp_path)
    [t] = [json.loads(line) for line in (tmp_path / "out" / "http.jsonl").read_text().splitlines()]
    assert (t["method"], t["host"], t["uri"], t["user_agent"]) == ("GET", "eu.httpbin.org", "/image/svg", "curl/7.76.1")
    assert (t["status_code"], t["status_msg"], t["response_body_len"]) == (200, "OK", 8984)
    assert t["response_content_type"] == "image/svg+xml" and t["vni"] == 1
    assert t["tags"] == [] and 0 < t["latency"] < 1
    flows = [json.loads(line) for line in (tmp_path / "out" / "flows.jsonl").read_text().splitlines()]
    [f] = [f for f in flows if f["dstport"] == 80]
    assert f["app_proto"] == "http" and f["community_id"] == t["community_id"]
