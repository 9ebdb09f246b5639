"""Where mirrored traffic is messy: Zeek-level connection and HTTP semantics (issue 17).

Every test runs a capture through the whole pipeline (`analyze`: decode, flows, HTTP) and checks
what a user reads in flows.jsonl and http.jsonl. Captures are either public Zeek test traces
(../shared/corpus/zeek-http, origins in tests/SOURCES.md, with Zeek's own published baseline
for them quoted where it is compared) or crafted here with tests/craft.py. Expected values are
reasoned from the RFCs and Zeek's documented behaviour, cited at each assertion.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_app.core.flowtable import FlowConfig
from tests.conftest import CORPUS, run
from tests.craft import (
    TcpConversation,
    icmp_echo,
    ip4,
    ipv4_packet,
    llc_snap_frame,
    mpls_frame,
    mpls_pseudowire_frame,
    udp_frame,
    write_pcap,
)

ZEEK_HTTP = CORPUS / "zeek-http"


def http_records(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out" / "http.jsonl").read_text().splitlines()]


def analyze_frames(tmp_path, frames, config: FlowConfig | None = None, fast: bool = True):
    pcap = write_pcap(tmp_path / "crafted.pcap", frames)
    res, flows = run([pcap], tmp_path, config, fast=fast)
    return res, flows, http_records(tmp_path)


def exchange(conv: TcpConversation, i: int, body: bytes = b"ok") -> tuple[int, int]:
    """One keep-alive request and its response; their segment indexes."""
    q = conv.client(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
    r = conv.server(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    return q, r


# -- history letters for every protocol -------------------------------------------------------


def test_udp_flows_carry_zeeks_history_letters_and_icmp_none(tmp_path):
    # Zeek's UDP analyzer (src/packet_analysis/protocol/udp/UDP.cc) calls
    # CheckHistory(HIST_ORIG_DATA_PKT, 'D') for every originator datagram and 'd' for the
    # responder's, each letter once: a DNS query and its answer read "Dd". A lone answer from
    # port 53 is flipped (the server port is the responder's, Conn::FlipRoles adds '^'): "^d".
    # Zeek's ICMP analyzer sets no history letter: the field stays empty.
    frames = [
        (1.0, udp_frame("10.0.0.1", "10.0.0.53", 33000, 53, b"query")),
        (1.1, udp_frame("10.0.0.53", "10.0.0.1", 53, 33000, b"answer")),
        (1.2, udp_frame("10.0.0.1", "10.0.0.53", 33000, 53, b"again")),  # no second 'D'
        (2.0, udp_frame("10.0.0.53", "10.0.0.9", 53, 34000, b"unsolicited")),
        (3.0, icmp_echo("10.0.0.1", "10.0.0.2", reply=False)),
        (3.1, icmp_echo("10.0.0.2", "10.0.0.1", reply=True)),
    ]
    _, flows, _ = analyze_frames(tmp_path, frames)
    by = {(f.protocol, f.srcport, f.dstport): f for f in flows}
    assert by[17, 33000, 53].history == "Dd" and by[17, 33000, 53].conn_state == "SF"
    assert by[17, 34000, 53].history == "^d"
    assert [f.history for f in flows if f.protocol == 1] == [""]


def test_dns_in_a_real_aws_mirror_capture_reads_Dd(tmp_path):
    # Captured by AWS VPC Traffic Mirroring (suricata-verify vxlan-decoder-03): DNS queries
    # answered inside VXLAN. Every answered UDP flow is "Dd" in Zeek's conn.log.
    _, flows = run([CORPUS / "sv__vxlan-decoder-03__vxlan.pcap"], tmp_path)
    dns = [f for f in flows if f.protocol == 17 and 53 in (f.srcport, f.dstport)]
    assert dns and all(f.history == ("Dd" if f.resp_pkts else "D") for f in dns)
    assert any(f.history == "Dd" for f in dns)


# -- end_reason ---------------------------------------------------------------------------------


def test_a_short_flow_that_idles_out_ends_idle_not_active(tmp_path):
    # A connection whose whole life is 10 microseconds, then silence: it ends by the idle
    # timeout (Zeek: tcp_inactivity_timeout), in one record. "active" would claim that the
    # flow went on in a next record, and none exists. A later packet of another flow moves
    # capture time past both timeouts.
    conv = TcpConversation().handshake()
    frames = [(1.0 + k * 5e-6, f) for k, (_, f, _) in enumerate(conv.segments)]
    frames.append((1000.0, udp_frame("10.9.9.9", "10.9.9.8", 1234, 5678, b"x")))
    cfg = FlowConfig(idle_timeout=15, tcp_idle_timeout=300, active_timeout=60)
    _, flows, _ = analyze_frames(tmp_path, frames, cfg)
    tcp = [f for f in flows if f.protocol == 6]
    assert [(f.end_reason, f.packets) for f in tcp] == [("idle", 3)]


def test_active_means_the_flow_went_on_in_the_next_record(tmp_path):
    # A keep-alive connection with a packet every 50 s: the packet at 100 s comes after the
    # 60 s active timeout, so the first record (0-50 s) is reported "active" and the packet
    # starts the next; that one ends "idle" 300 s after its last packet.
    conv = TcpConversation().handshake()
    conv.client(b"a")
    conv.client(b"b")
    conv.client(b"c")
    times = [0.0, 0.0001, 0.0002, 50.0, 100.0, 150.0]
    frames = [(1.0 + t, f) for t, (_, f, _) in zip(times, conv.segments)]
    frames.append((1000.0, udp_frame("10.9.9.9", "10.9.9.8", 1234, 5678, b"x")))
    cfg = FlowConfig(idle_timeout=15, tcp_idle_timeout=300, active_timeout=60)
    _, flows, _ = analyze_frames(tmp_path, frames, cfg)
    tcp = [f for f in flows if f.protocol == 6]
    assert [(f.end_reason, f.packets) for f in tcp] == [("active", 4), ("idle", 2)]


# -- L7 decision across tiny segments -----------------------------------------------------------


def test_http_sent_a_byte_at_a_time_is_still_http(tmp_path):
    # RFC 9112 2.2: a recipient parses the message from the byte stream; segment boundaries
    # mean nothing. A client sending "G", "E", "T / HTTP/1.1..." (an IDS evasion trick) sends
    # the same request as one that sends it whole.
    conv = TcpConversation().handshake()
    for piece in (b"G", b"E", b"T", b" ", b"/p", b"ath HTTP/1.1\r\nHo", b"st: h\r\n\r\n"):
        conv.client(piece)
    conv.server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    conv.close()
    _, flows, http = analyze_frames(tmp_path, conv.frames())
    assert [f.app_proto for f in flows] == ["http"]
    assert [(t["method"], t["uri"], t["host"], t["status_code"], t["response_body_len"], t["tags"])
            for t in http] == [("GET", "/path", "h", 200, 2, [])]


def test_tiny_segments_of_something_else_are_not_http(tmp_path):
    # The same holding must not turn a non-HTTP protocol into HTTP: an SSH banner exchange.
    conv = TcpConversation(sport=22).handshake()
    conv.client(b"S")
    conv.client(b"SH-2.0-OpenSSH_9.6\r\n")
    conv.server(b"SSH-2.0-OpenSSH_9.6\r\n")
    conv.close()
    _, flows, http = analyze_frames(tmp_path, conv.frames())
    # ... and the held bytes still name it by content.
    assert [f.app_proto for f in flows] == ["ssh"] and http == []


# -- HTTP/0.9 and odd request/status lines ------------------------------------------------------


def test_http09_requests_of_any_method_are_read_as_zeek_reads_them(tmp_path):
    # Zeek's test trace http/http_09.pcap: "GET /zeek.html\n", "POST /zeek.html\n" and
    # "GET \n", each answered with raw bytes. Zeek's baseline (testing/btest/Baseline/
    # scripts.base.protocols.http.http-09/http.log) logs GET /zeek.html and POST /zeek.html
    # (HTTP.cc ParseRequest: no "HTTP/" in the line means version 0.9; HTTP_RequestLine
    # accepts any method of 3+ characters with a URI) and nothing for "GET " (no URI).
    # RFC 1945 4.1: an HTTP/0.9 response is the entity body alone, up to the close.
    run([ZEEK_HTTP / "http_09.pcap"], tmp_path)
    http = http_records(tmp_path)
    got = [(t["method"], t["uri"], t["version"], t["status_code"], t["response_body_len"]) for t in http]
    # tshark: the answers are 51 ("<html>\n  The Zeek ... Monitor\n</html>\n") and 11 bytes.
    assert got[:2] == [("GET", "/zeek.html", "0.9", None, 51), ("POST", "/zeek.html", "0.9", None, 11)]
    assert all("http09" in t["tags"] and "malformed_request" not in t["tags"] for t in http[:2])
    # Deliberate difference: "GET " is reported (tagged malformed), where Zeek logs nothing.
    assert len(http) == 3 and "malformed_request" in http[2]["tags"]


def test_http09_request_ended_by_a_blank_line_is_not_malformed(tmp_path):
    # "GET /\r\n\r\n": a request line without a version (RFC 1945 Simple-Request) followed by
    # an empty line; the server answers with the raw body (16 bytes) and closes.
    conv = TcpConversation().handshake()
    conv.client(b"GET /\r\n\r\n")
    conv.server(b"<html>raw</html>")
    conv.close()
    _, _, http = analyze_frames(tmp_path, conv.frames())
    assert [(t["method"], t["uri"], t["version"], t["response_body_len"], t["tags"]) for t in http] \
        == [("GET", "/", "0.9", 16, ["http09"])]


def test_a_one_line_request_buffered_at_the_close_is_not_lost(tmp_path):
    # "POST /x\n" with nothing after it: an HTTP/0.9 request (Zeek's rule above). It used to
    # wait for a blank line that never came and vanish at the close.
    conv = TcpConversation().handshake()
    conv.client(b"POST /x\n")
    conv.server(b"gone")
    conv.close()
    _, flows, http = analyze_frames(tmp_path, conv.frames())
    assert flows[0].app_proto == "http"
    assert [(t["method"], t["uri"], t["version"], t["response_body_len"]) for t in http] \
        == [("POST", "/x", "0.9", 4)]
    # An HTTP/1.1 head that the connection's end cut short is reported, tagged truncated.
    conv = TcpConversation().handshake()
    conv.client(b"GET /cut HTTP/1.1\r\nHost: h\r\n")
    conv.close()
    _, _, http = analyze_frames(tmp_path, conv.frames())
    assert [(t["method"], t["uri"], t["host"]) for t in http] == [("GET", "/cut", "h")]
    assert "truncated" in http[0]["tags"] and "no_response" in http[0]["tags"]


def test_a_request_line_without_target(tmp_path):
    # Zeek's trace http/no-uri.pcap sends "GET HTTP/1.1". Zeek's baseline (Baseline/
    # scripts.base.protocols.http.no-uri/http.log): method GET, host bro.org, uri (empty),
    # version 1.1, status 200 OK, response_body_len 4705 (HTTP.cc: missing_HTTP_uri leaves
    # the URI empty; the version is still read).
    run([ZEEK_HTTP / "no-uri.pcap"], tmp_path)
    [t] = http_records(tmp_path)
    assert (t["method"], t["host"], t["uri"], t["version"], t["status_code"], t["status_msg"],
            t["response_body_len"]) == ("GET", "bro.org", "", "1.1", 200, "OK", 4705)
    assert "malformed_request" in t["tags"]  # the deviation is still tagged


def test_a_lower_case_status_line_is_read_and_tagged(tmp_path):
    # Zeek's trace http/http-lower-case.pcap answers "http/1.1 200 OK". Zeek's baseline
    # (Baseline/scripts.base.protocols.http.http-lower-case/http.log.standard) reads status
    # 200 "OK" for GET /index.html. RFC 9112 2.3 makes "HTTP" case-sensitive, so the record
    # also says the server deviated.
    run([ZEEK_HTTP / "http-lower-case.pcap"], tmp_path)
    [t] = http_records(tmp_path)
    assert (t["method"], t["uri"], t["version"], t["status_code"], t["status_msg"]) \
        == ("GET", "/index.html", "1.1", 200, "OK")
    assert "lowercase_status_line" in t["tags"] and "malformed_response" not in t["tags"]


# -- pairing under mirror reordering -------------------------------------------------------------


def _pairs(http):
    return [(t["uri"], t["status_code"], t["response_body_len"]) for t in http]


def test_a_request_copy_delivered_after_its_response_pairs_by_the_acks(tmp_path):
    # Keep-alive, four exchanges, each response a different size. The mirror delivered the
    # copy of request 2 after its response (and one response's head before the request it
    # answers, its body after). TCP (RFC 9293 3.4): a segment's ACK number says which bytes
    # of the other direction its sender had received; the server sent response 2 after
    # receiving request 2, so response 2 answers request 2, whatever the copies' order.
    conv = TcpConversation().handshake()
    idx = [exchange(conv, i, b"x" * (10 + i)) for i in range(4)]
    conv.close()
    order = list(range(len(conv.segments)))
    q2, r2 = idx[2]
    order[q2], order[r2] = r2, q2  # the response's copy first
    _, _, http = analyze_frames(tmp_path, conv.frames(order))
    assert _pairs(http) == [("/%d" % i, 200, 10 + i) for i in range(4)]
    assert not any({"pipelined", "no_response", "no_request"} & set(t["tags"]) for t in http)
    # Its request's capture time is later than its response's: the latency is unknown, not
    # negative, and the record says why.
    assert "reordered" in http[2]["tags"] and http[2]["latency"] is None
    assert all(t["latency"] > 0 for i, t in enumerate(http) if i != 2)


def test_pipelining_is_still_pipelining(tmp_path):
    # The control: a client that really sends request 2 before response 1 (RFC 9112 9.3.2)
    # is pipelining; the ACKs say so (request 2 does not acknowledge response 1).
    conv = TcpConversation().handshake()
    conv.client(b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\n")
    conv.client(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
    conv.server(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    conv.server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nbb")
    conv.close()
    _, _, http = analyze_frames(tmp_path, conv.frames())
    assert _pairs(http) == [("/0", 200, 1), ("/1", 404, 2)]
    assert "pipelined" in http[1]["tags"]


def test_a_request_copy_the_mirror_lost_does_not_shift_later_pairs(tmp_path):
    # The copy of request 1 never arrives. Response 1 acknowledges bytes the capture never
    # showed: they are a gap, the response is charged to the lost request, and requests 2 and
    # 3 keep their own responses.
    conv = TcpConversation().handshake()
    idx = [exchange(conv, i, b"y" * (20 + i)) for i in range(4)]
    conv.close()
    _, _, http = analyze_frames(tmp_path, conv.frames(drop={idx[1][0]}))
    assert _pairs(http) == [("/0", 200, 20), (None, 200, 21), ("/2", 200, 22), ("/3", 200, 23)]
    assert "gap" in http[1]["tags"]
    assert not any("no_response" in t["tags"] for t in http)


# -- body lengths ---------------------------------------------------------------------------------


def test_body_length_counts_message_body_bytes_after_chunked_framing(tmp_path):
    # response_body_len is the message body's length (RFC 9112 6): Content-Length bytes, or
    # for chunked transfer coding the chunk data without the chunk-size lines and trailers
    # (RFC 9112 7.1), before any Content-Encoding is undone (a gzip body counts compressed).
    conv = TcpConversation().handshake()
    conv.client(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    conv.client(b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n")
    conv.server(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 7\r\n\r\n\x1f\x8b\x08\x00\x00\x00\x00")
    conv.close()
    _, _, http = analyze_frames(tmp_path, conv.frames())
    assert [(t["request_body_len"], t["response_body_len"]) for t in http] == [(8, 7)]


def test_a_body_ended_by_the_close_is_counted_exactly(tmp_path):
    # No Content-Length, no chunking: the body runs to the close (RFC 9112 6.3 rule 8). The
    # server's FIN carries the sequence number of the body's end, so the count is exact even
    # when copies come out of order, repeat, or the mirror missed the last segment before the
    # FIN (that part is a gap: counted, and tagged).
    conv = TcpConversation().handshake()
    conv.client(b"GET /stream HTTP/1.0\r\n\r\n")
    h = conv.server(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    a = conv.server(b"a" * 1000)
    b = conv.server(b"b" * 700)
    c = conv.server(b"c" * 300)
    conv.close()
    order = list(range(len(conv.segments)))
    order[a], order[b] = b, a  # out of order
    order.insert(order.index(b) + 1, a)  # and a retransmission of the first body segment
    _, _, http = analyze_frames(tmp_path, conv.frames(order))
    assert [(t["status_code"], t["response_body_len"], t["tags"]) for t in http] == [(200, 2000, [])]
    _, _, http = analyze_frames(tmp_path, conv.frames(drop={c}))
    assert [(t["response_body_len"], "gap" in t["tags"]) for t in http] == [(2000, True)]
    assert h  # (the head is segment h; kept for the reader)


# -- framing: LLC/SNAP and MPLS ---------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_llc_snap_and_mpls_carry_ip_and_are_decoded(tmp_path, fast):
    # RFC 1042: IP over IEEE 802.3 rides behind LLC AA-AA-03 and SNAP OUI 0 with EtherType
    # 0x0800. RFC 3032: an MPLS label stack ends at the S bit; IPv4 follows (Zeek reads the
    # version nibble too). RFC 4448: Ethernet over MPLS, with the RFC 4385 control word.
    def dns(sport):
        import dpkt
        return ipv4_packet(ip4("10.1.0.1"), ip4("10.1.0.53"), 17,
                           dpkt.udp.UDP(sport=sport, dport=53, data=b"query"))

    inner_eth = udp_frame("10.1.0.1", "10.1.0.53", 40003, 53, b"query")
    stp = b"\x01\x80\xc2\x00\x00\x00" + b"\x02\x00\x00\x00\x00\x01" + b"\x00\x26" + b"\x42\x42\x03" + b"\x00" * 35
    mpls_unknown = b"\x02" * 12 + b"\x88\x47" + b"\x00\x06\x41\x40" + b"\x50" + b"\x00" * 40
    frames = [(1.0, llc_snap_frame(dns(40001))), (1.1, mpls_frame(dns(40002))),
              (1.2, mpls_pseudowire_frame(inner_eth)), (1.3, stp), (1.4, mpls_unknown)]
    res, flows, _ = analyze_frames(tmp_path, frames, fast=fast)
    assert sorted(f.srcport for f in flows) == [40001, 40002, 40003]
    assert all((f.srcaddr, f.dstaddr, f.dstport) == ("10.1.0.1", "10.1.0.53", 53) for f in flows)
    # What stays undecodable is named for what it is: spanning tree carries no IP; an MPLS
    # payload that is neither IP nor a pseudowire is an unsupported MPLS payload.
    assert {k: v for k, v in res.drops.items() if v} == {"non_ip": 1, "unsupported_mpls_payload": 1}


def test_a_lab_capture_with_request_copies_after_their_responses(tmp_path):
    # tests/data/mirror-lab-keepalive.pcap: one keep-alive connection from the mirror lab
    # (ab -k, 24 requests answered 404, VXLAN as AWS delivers it; see tests/SOURCES.md).
    # Here every third request's copy is moved after the response that acknowledges it, the
    # reordering a mirror produces. Without the ACKs every later response paired with the
    # previous request (tagged pipelined, the last one no_response). With them the records
    # are the original capture's: 24 requests, each with its own 404.
    import dpkt

    from collectors.decode import Decoder, PayloadPolicy

    src = Path(__file__).parent / "data" / "mirror-lab-keepalive.pcap"
    with open(src, "rb") as f:
        rd = dpkt.pcap.Reader(f)
        frames = [(ts, bytes(buf)) for ts, buf in rd]
    dec = Decoder(payload=PayloadPolicy(max_bytes=0))
    kinds = []
    for ts, buf in frames:
        r = dec.decode(buf, 1, 0)
        kinds.append("req" if r.payload_len and r.dport == 80 else "resp" if r.payload_len else "")
    order = list(range(len(frames)))
    moved = 0
    for n, i in enumerate([i for i, k in enumerate(kinds) if k == "req"]):
        if n % 3 != 1:
            continue
        j = next(j for j in range(i + 1, len(frames)) if kinds[j] == "resp")
        pos = order.index(i)
        order.pop(pos)
        order.insert(order.index(j) + 1, i)
        moved += 1
    times = [ts for ts, _ in frames]  # a capture's timestamps follow its own order
    reordered = [(times[k], frames[i][1]) for k, i in enumerate(order)]

    run([src], tmp_path)
    original = http_records(tmp_path)
    _, _, http = analyze_frames(tmp_path, reordered)
    assert moved == 8 and len(original) == len(http) == 24
    assert [(t["trans_depth"], t["uri"], t["status_code"], t["response_body_len"]) for t in http] \
        == [(t["trans_depth"], t["uri"], t["status_code"], t["response_body_len"]) for t in original]
    assert not any({"pipelined", "no_response", "no_request"} & set(t["tags"]) for t in http)
    assert sum("reordered" in t["tags"] for t in http) == moved


def test_a_half_closed_client_is_no_lost_request(tmp_path):
    # The client sends its request and its FIN at once (HTTP/1.0 style half-close, RFC 9293
    # 3.6); the server's answer acknowledges the FIN's sequence number, which is no data. The
    # exchange pairs at once, with no gap, while the flow is still open.
    conv = TcpConversation().handshake()
    conv.client(b"GET /h HTTP/1.0\r\n\r\n")
    conv._seg(True, 0x11)  # FIN|ACK
    conv.server(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    _, _, http = analyze_frames(tmp_path, conv.frames())
    assert [(t["uri"], t["status_code"], t["tags"]) for t in http] == [("/h", 200, [])]
