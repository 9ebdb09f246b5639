"""DNS: the message parser (against messages built by dpkt.dns, an independent encoder), its
safety on hostile bytes, query/response pairing, DNS over TCP, state without pickle, and the
content verdict on the corpus (tests/test_dns_tshark_differential.py compares with tshark)."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import dpkt
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.core import dns
from stream_app.core.l7 import L7
from tests.conftest import CORPUS
from tests.craft import TcpConversation, udp_frame, write_pcap
from tests.dns_helpers import core_run


def query(name: str, tid: int = 0x1234, qtype: int = 1, flags: int = 0x0100) -> bytes:
    m = dpkt.dns.DNS(id=tid, op=flags, qd=[dpkt.dns.DNS.Q(name=name, type=qtype, cls=1)])
    return bytes(m)


def response(name: str, answers, tid: int = 0x1234, qtype: int = 1, rcode: int = 0,
             tc: bool = False) -> bytes:
    flags = 0x8180 | rcode | (0x0200 if tc else 0)
    m = dpkt.dns.DNS(id=tid, op=flags, qd=[dpkt.dns.DNS.Q(name=name, type=qtype, cls=1)],
                     an=answers)
    return bytes(m)


def rr(name, type_, ttl=300, **kw):
    r = dpkt.dns.DNS.RR(name=name, type=type_, cls=1, ttl=ttl)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


# -- parser -------------------------------------------------------------------------------------
def test_parse_every_decoded_type():
    answers = [
        rr("www.example.com", dpkt.dns.DNS_CNAME, 60, cname="web.example.net"),
        rr("web.example.net", dpkt.dns.DNS_A, 30, ip=bytes([192, 0, 2, 7])),
        rr("web.example.net", dpkt.dns.DNS_AAAA, 30, ip6=bytes.fromhex("20010db8" + "00" * 11 + "01")),
        rr("example.com", dpkt.dns.DNS_MX, 10, preference=5, mxname="mail.example.com"),
        rr("example.com", dpkt.dns.DNS_NS, 10, nsname="ns1.example.com"),
        rr("7.2.0.192.in-addr.arpa", dpkt.dns.DNS_PTR, 10, ptrname="web.example.net"),
        rr("example.com", dpkt.dns.DNS_TXT, 10, text=[b"v=spf1 ", b"-all"]),
        rr("example.com", dpkt.dns.DNS_SOA, 10, mname="ns1.example.com", rname="admin.example.com",
           serial=2026120401, refresh=7200, retry=900, expire=1209600, minimum=300),
        rr("_sip._udp.example.com", dpkt.dns.DNS_SRV, 10, priority=1, weight=2, port=5060,
           srvname="sip.example.com"),
    ]
    m = dns.parse(response("www.example.com", answers))
    assert not m.malformed and m.response and m.rcode == 0
    assert (m.qname, m.qtype, m.qclass) == ("www.example.com", 1, 1)
    got = [(a.name, a.type, a.ttl, a.data) for a in m.answers]
    assert got == [
        ("www.example.com", "CNAME", 60, "web.example.net"),
        ("web.example.net", "A", 30, "192.0.2.7"),
        ("web.example.net", "AAAA", 30, "2001:db8::1"),
        ("example.com", "MX", 10, "5 mail.example.com"),
        ("example.com", "NS", 10, "ns1.example.com"),
        ("7.2.0.192.in-addr.arpa", "PTR", 10, "web.example.net"),
        ("example.com", "TXT", 10, "v=spf1 -all"),
        ("example.com", "SOA", 10, "ns1.example.com admin.example.com 2026120401 7200 900 1209600 300"),
        ("_sip._udp.example.com", "SRV", 10, "1 2 5060 sip.example.com"),
    ]


def test_unknown_type_is_hex_and_names_escaped():
    header = struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0)
    q = b"\x03a.b\x02\x00x\x00" + struct.pack("!HH", 1, 1)
    ans = b"\xc0\x0c" + struct.pack("!HHIH", 4321, 1, 5, 3) + b"\xde\xad\x01"
    m = dns.parse(header + q + ans)
    assert m.qname == "a\\.b.\\000x"
    assert [(a.type, a.data) for a in m.answers] == [("TYPE4321", "dead01")]


def _header(qd=1, an=0, flags=0x0100):
    return struct.pack("!HHHHHH", 1, flags, qd, an, 0, 0)


@pytest.mark.parametrize("body", [
    b"\xc0\x0c" + b"\x00\x01\x00\x01",                 # a pointer to itself
    b"\x01a\xc0\x0e\x00\x01\x00\x01",                  # a pointer forward (into its own name)
    b"\x01a\xc0\x0c\x00\x01\x00\x01",                  # back to the start of itself: a loop
    b"\xc0\xff" + b"\x00\x01\x00\x01",                 # out of range
    b"\x3fabc",                                        # a label past the end
    b"\x80abc\x00\x00\x01\x00\x01",                    # a reserved label type
    (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # a name of more than 255 bytes
])
def test_hostile_names_are_malformed_not_errors(body):
    m = dns.parse(_header() + body)
    assert m is not None and m.malformed and m.qname is None
    assert dns.plausible(_header() + body) is False


def test_short_and_truncated():
    assert dns.parse(b"\x00" * 11) is None
    full = response("example.com", [rr("example.com", 1, ip=b"\x01\x02\x03\x04")])
    m = dns.parse(full[:-2])  # the snap length cut the last answer
    assert m.malformed and m.qname == "example.com" and m.answers == []
    assert dns.plausible(full[:-2])  # still a DNS message, cut by the capture


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data):
    dns.parse(data)
    dns.plausible(data)
    dns.dns_tcp_client_verdict(data)
    dns.dns_tcp_server_verdict(data)
    pairing = dns.Pairing(SimpleNamespace(dns=[]), _FLOW, "udp")
    pairing.message(data, 1, True)
    pairing.message(data, 2, False)
    pairing.finish()


@settings(max_examples=1500, deadline=None)
@given(st.binary(min_size=12, max_size=12), st.lists(st.integers(0, 255), max_size=300))
def test_mutated_messages_never_raise(hdr, body):
    # Mostly well-formed beginnings with random tails: reach deep into the record parsing.
    base = response("a.example.com", [rr("a.example.com", 1, ip=b"\x01\x02\x03\x04")])
    data = base[:12 + len(body) % len(base)] + bytes(body)
    m = dns.parse(data)
    assert m is not None
    dns.parse(hdr + data[12:])


_FLOW = SimpleNamespace(addr_texts=lambda: ("10.0.0.1", "10.0.0.2"), orig_port=40000,
                        resp_port=53, conn_uid_cache=lambda: "C", cid_cache=lambda: "1:x",
                        vni=None, direction=None)


# -- pairing through the pipeline ----------------------------------------------------------------
C, S = "10.0.0.1", "10.0.0.53"


def _udp(tmp_path, exchanges, port=53, name="dns.pcap"):
    frames = [(1.0 + i * 0.01, udp_frame(*((C, S, 40000, port) if q else (S, C, port, 40000)), m))
              for i, (q, m) in enumerate(exchanges)]
    return write_pcap(tmp_path / name, frames)


def test_pairing_retransmission_no_response_no_query(tmp_path):
    a = [rr("a.example.com", 1, ip=b"\x01\x02\x03\x04")]
    cap = _udp(tmp_path, [
        (True, query("a.example.com", 1)),
        (True, query("a.example.com", 1)),                 # retransmitted
        (True, query("b.example.com", 2, qtype=28)),       # never answered
        (False, response("a.example.com", a, 1)),
        (False, response("c.example.com", [], 3, rcode=3)),  # no query seen
        (True, query("d.example.com", 4)),
        (False, response("d.example.com", [], 4, tc=True)),
    ])
    res, core = core_run([cap])
    recs = {r.dns_id.rsplit("-", 1)[1]: r for r in res.dns}
    assert sorted(recs) == ["1", "2", "3", "4"]
    one, two, three, four = (recs[k] for k in "1234")
    assert (one.query, one.rcode_name, one.tags) == ("a.example.com", "NOERROR", ["retransmitted"])
    assert [(x.type, x.data, x.ttl) for x in one.answers] == [("A", "1.2.3.4", 300)]
    assert one.rtt == pytest.approx(0.03)  # from the first copy: what the client waited
    assert (one.srcaddr, one.dstaddr, one.dstport, one.transport) == (C, S, 53, "udp")
    assert (two.query, two.qtype_name, two.rcode, two.tags) == ("b.example.com", "AAAA", None, ["no_response"])
    assert (three.query, three.rcode_name, three.tags, three.rtt) == ("c.example.com", "NXDOMAIN", ["no_query"], None)
    assert three.srcaddr == C  # the client, though only the server's datagram was seen
    assert four.truncated and four.recursion_desired and four.recursion_available
    assert [f.app_proto for f in res.flows] == ["dns"]
    assert res.flows[0].app_proto_source == "content"
    assert core.l7.dns_stats["retransmitted"] == 1
    assert core.stats()["dns_retransmitted"] == 1 and core.stats()["dns_no_query"] == 1


def test_dns_on_any_port_and_not_on_other_udp(tmp_path):
    cap = _udp(tmp_path, [(True, query("x.example.org", 9)), (False, response("x.example.org", [], 9))],
               port=5300)
    res, _ = core_run([cap])
    assert [(f.app_proto, f.app_proto_source) for f in res.flows] == [("dns", "content")]
    assert res.dns[0].dstport == 5300 and res.dns[0].rtt is not None
    frames = [(1.0, udp_frame(C, S, 40000, 53, b"\x12\x34" + b"\x00" * 40))]
    res, _ = core_run([write_pcap(tmp_path / "junk.pcap", frames)])
    assert res.dns == [] and res.flows[0].app_proto_source != "content"


def test_query_flood_on_one_flow_is_bounded(tmp_path):
    n = 3 * dns.MAX_PENDING
    cap = _udp(tmp_path, [(True, query(f"n{i}.example.com", i)) for i in range(n)])
    res, core = core_run([cap])
    assert len(res.dns) == n  # every query reported: none silently lost
    over = [r for r in res.dns if "pending_overflow" in r.tags]
    assert len(over) == n - dns.MAX_PENDING == core.l7.dns_stats["pending_overflow"]
    assert all("no_response" in r.tags for r in res.dns)
    assert sorted(int(r.dns_id.rsplit("-", 1)[1]) for r in res.dns) == list(range(1, n + 1))


def test_dns_over_tcp_several_messages_split_segments(tmp_path):
    c = TcpConversation(C, S, 40001, 53).handshake()
    q1, q2 = query("t1.example.com", 11), query("t2.example.com", 12, qtype=16)
    r1 = response("t1.example.com", [rr("t1.example.com", 1, ip=b"\x0a\x00\x00\x01")], 11)
    r2 = response("t2.example.com", [rr("t2.example.com", 16, text=[b"hello"])], 12, qtype=16)
    framed = lambda m: struct.pack("!H", len(m)) + m  # noqa: E731
    c.client(framed(q1)[:5])          # the first message split across segments
    c.client(framed(q1)[5:] + framed(q2))
    c.server(framed(r1) + framed(r2)[:3])
    c.server(framed(r2)[3:])
    c.close()
    res, _ = core_run([write_pcap(tmp_path / "tcp.pcap", c.frames())])
    assert [(f.app_proto, f.app_proto_source) for f in res.flows] == [("dns", "content")]
    got = sorted((r.dns_id.rsplit("-", 1)[1], r.query, r.transport, r.rcode_name,
                  [(a.type, a.data) for a in r.answers], r.tags) for r in res.dns)
    assert got == [("1", "t1.example.com", "tcp", "NOERROR", [("A", "10.0.0.1")], []),
                   ("2", "t2.example.com", "tcp", "NOERROR", [("TXT", "hello")], [])]


# -- state without pickle ------------------------------------------------------------------------
def _roundtrip(a, l7, flow):
    enc = msgspec.msgpack.encode(a.to_state())
    state = msgspec.msgpack.decode(enc, type=dns.DnsUdpState | dns.DnsTcpState)
    return type(a).from_state(state, l7, flow)


def test_udp_state_round_trip_continues_the_same():
    l7 = L7()
    a = dns.DnsUdpAnalyzer(l7, _FLOW)
    pkt = lambda p, t: SimpleNamespace(payload=p, payload_len=len(p), ts_ns=t)  # noqa: E731
    a.packet(pkt(query("a.example.com", 1), 10), True)
    a.packet(pkt(query("b.example.com", 2), 20), True)
    b = _roundtrip(a, l7, _FLOW)
    assert b.to_state() == a.to_state()
    b.packet(pkt(response("a.example.com", [], 1), 50), False)
    b.finish(60)
    got = sorted((r.dns_id, r.query, r.tags, r.rtt) for r in l7.dns)
    assert got == [("C-1", "a.example.com", [], 40 / 1e9), ("C-2", "b.example.com", ["no_response"], None)]


def test_tcp_state_round_trip_mid_message(tmp_path):
    l7 = L7()
    a = dns.DnsTcpAnalyzer(l7, _FLOW, 1000, 5000, False)
    m = query("t.example.com", 5)
    data = struct.pack("!H", len(m)) + m
    seg = lambda seq, p, t: SimpleNamespace(tcp_flags=0x18, ack=0, seq=seq, payload=p,  # noqa: E731
                                            payload_len=len(p), ts_ns=t)
    a.packet(seg(1001, data[:7], 1), True)
    a.packet(seg(1001 + 12, data[12:], 2), True)  # out of order: held in the Direction
    b = _roundtrip(a, l7, _FLOW)
    assert b.to_state() == a.to_state()
    b.packet(seg(1008, data[7:12], 3), True)
    r = response("t.example.com", [], 5)
    b.packet(seg(5001, struct.pack("!H", len(r)) + r, 9), False)
    b.finish(10)
    assert [(x.query, x.tags, x.rtt) for x in l7.dns] == [("t.example.com", [], 8 / 1e9)]


# -- the corpus ----------------------------------------------------------------------------------
def test_vxlan_decoder_03_dns_flows_named_by_content():
    res, _ = core_run([CORPUS / "sv__vxlan-decoder-03__vxlan.pcap"])
    dnsf = [f for f in res.flows if f.app_proto == "dns"]
    assert dnsf and all(f.app_proto_source == "content" for f in dnsf)
    assert {f.dstport for f in dnsf} == {53}
    assert len(res.dns) == 8 and all(r.rcode_name == "NOERROR" and not r.tags for r in res.dns)


def test_dns_over_tcp_gap_loses_framing_counted(tmp_path):
    c = TcpConversation(C, S, 40002, 53).handshake()
    q1, q2 = query("g1.example.com", 21), query("g2.example.com", 22)
    framed = lambda m: struct.pack("!H", len(m)) + m  # noqa: E731
    c.client(framed(q1))
    c.server(framed(response("g1.example.com", [], 21)))
    lost = c.client(framed(q2)[:10])   # never mirrored: the framing is lost after it
    c.client(framed(q2)[10:])
    c.server(framed(response("g2.example.com", [], 22)))
    c.close()
    res, core = core_run([write_pcap(tmp_path / "gap.pcap", c.frames(drop={lost}))])
    got = sorted((r.query, r.tags) for r in res.dns)
    # g1 paired; the client's framing is lost, so g2's response has no query to pair with.
    assert got == [("g1.example.com", []), ("g2.example.com", ["no_query"])]
    assert core.l7.dns_stats["tcp_framing_lost"] == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3000), st.binary(max_size=120)),
                max_size=25))
def test_tcp_analyzer_on_arbitrary_segments(segs):
    l7 = L7()
    a = dns.DnsTcpAnalyzer(l7, _FLOW, 0, 0, False)
    for i, (orig, off, data) in enumerate(segs):
        a.packet(SimpleNamespace(tcp_flags=0x18, ack=0, seq=1 + off, payload=data,
                                 payload_len=len(data), ts_ns=i), orig)
        if i == len(segs) // 2:
            a = _roundtrip(a, l7, _FLOW)
    a.finish(10**9)
    assert all(r.transport == "tcp" for r in l7.dns)


def test_tcp_verdicts():
    q = query("v.example.com", 3)
    r = response("v.example.com", [], 3)
    framed = lambda m: struct.pack("!H", len(m)) + m  # noqa: E731
    assert dns.dns_tcp_client_verdict(framed(q)) is True
    assert dns.dns_tcp_server_verdict(framed(r)) is True
    assert dns.dns_tcp_client_verdict(framed(r)) is False   # a response is no client's first
    assert dns.dns_tcp_client_verdict(framed(q)[:9]) is None  # wait for the rest
    assert dns.dns_tcp_client_verdict(b"\x00\x05hello") is False
    assert dns.dns_tcp_client_verdict(b"\x00\x50" + b"\x00\x01\xff" * 30) is False  # decided
    assert dns.dns_tcp_client_verdict(b"GET / HTTP/1.1\r\n") is False
