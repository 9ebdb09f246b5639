"""Differential test against tshark's DNS dissector: every DNS query and response tshark sees in
the corpus captures with DNS (plain, VXLAN and Geneve+VXLAN encapsulated: tshark decodes inside
the tunnels as we do) is in our DnsTransaction records with equal fields: transaction id, name,
qtype, rcode, and per answer its type, TTL and (for A, AAAA, CNAME) its data; and the query's
time. Deliberate differences are listed below with their reason (docs/dns.md); a new one, or a
listed one that disappears, fails the test. tests/e2e/test_dns_lab.py applies the same
comparison to a capture made through the mirror lab."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from stream_app.core.dns import TYPE_NAMES
from tests.conftest import CORPUS
from tests.dns_helpers import core_run

FILES = ["dpkt__http.pcap", "dpkt__nb6-http.pcap", "sv__vxlan-decoder-01__input.pcap",
         "sv__vxlan-decoder-03__vxlan.pcap", "zeek__geneve-vxlan-dns-truncated.pcap",
         "zeek__wikipedia.pcap"]
MDNS_LLMNR = ("mDNS (UDP 5353) and LLMNR (UDP 5355) speak DNS's format: we report them as Zeek "
              "does (its DNS analyzer takes both ports); tshark names them mdns/llmnr, not dns")
# file -> (reason, number of our records tshark has no dns frame for)
EXPECTED = {"zeek__wikipedia.pcap": (MDNS_LLMNR, 5)}
ICMP_QUOTED = {"dpkt__nb6-http.pcap": 1}
"""Frames where tshark decodes the DNS message an ICMP error quotes (port unreachable): the
copy of a datagram that was refused, not a message of the exchange; we count the ICMP flow."""
_NUM = {v: k for k, v in TYPE_NAMES.items()}
FIELDS = ("frame.time_epoch", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "icmp.type", "icmpv6.type", "udp.srcport", "udp.dstport", "tcp.srcport", "tcp.dstport",
          "dns.id", "dns.qry.name", "dns.qry.type", "dns.flags.rcode", "dns.flags.response",
          "dns.count.answers", "dns.resp.type", "dns.resp.ttl", "dns.a", "dns.aaaa", "dns.cname")


def tshark_dns(tshark: str, path, quoted: list | None = None) -> list[dict]:
    out = subprocess.run([tshark, "-n", "-r", str(path), "-Y", "dns", "-T", "fields",
                          "-E", "occurrence=a", "-E", "aggregator=\x1f",
                          *[a for f in FIELDS for a in ("-e", f)]],
                         capture_output=True, text=True, check=True).stdout
    msgs = []
    for line in out.splitlines():
        v = dict(zip(FIELDS, (x.split("\x1f") if x else [] for x in line.split("\t"))))
        if v["icmp.type"] or v["icmpv6.type"]:
            if quoted is not None:
                quoted.append(line)
            continue  # a DNS message quoted in an ICMP error: no transaction (see EXPECTED)
        # Addresses and ports of the innermost header (the outer ones are the tunnels').
        addrs = v["ip.src"][-1:] + v["ip.dst"][-1:] if v["ip.src"] else \
            v["ipv6.src"][-1:] + v["ipv6.dst"][-1:]
        ports = v["udp.srcport"][-1:] + v["udp.dstport"][-1:] if not v["tcp.srcport"] else \
            v["tcp.srcport"][-1:] + v["tcp.dstport"][-1:]
        ports = (addrs[0], int(ports[0]), addrs[1], int(ports[1]))
        for i, tid in enumerate(v["dns.id"]):  # one message per frame in these captures
            assert i == 0, "several DNS messages in one frame: extend the comparison"
            n = int(v["dns.count.answers"][0]) if v["dns.count.answers"] else 0
            types = [int(t) for t in v["dns.resp.type"][:n]]
            data = {1: list(v["dns.a"]), 28: list(v["dns.aaaa"]), 5: list(v["dns.cname"])}
            answers = tuple((t, int(ttl), data[t].pop(0) if t in data else None)
                            for t, ttl in zip(types, v["dns.resp.ttl"][:n]))
            msgs.append({"ts": float(v["frame.time_epoch"][0]), "ports": ports,
                         "id": int(tid, 16), "name": v["dns.qry.name"][0] if v["dns.qry.name"] else None,
                         "qtype": int(v["dns.qry.type"][0]) if v["dns.qry.type"] else None,
                         "response": v["dns.flags.response"][0] in ("1", "True"),
                         "rcode": int(v["dns.flags.rcode"][0]) if v["dns.flags.rcode"] else None,
                         "answers": answers})
    return msgs


def _rev(p):
    return (p[2], p[3], p[0], p[1])


def _ours_answers(r) -> tuple:
    out = []
    for a in r.answers:
        t = _NUM.get(a.type) or int(a.type[4:])
        out.append((t, a.ttl, a.data if t in (1, 28, 5) else None))
    return tuple(out)


@pytest.mark.parametrize("name", FILES)
def test_dns_matches_tshark(name, tshark):
    path = CORPUS / name
    quoted: list = []
    theirs = tshark_dns(tshark, path, quoted)
    assert len(quoted) == ICMP_QUOTED.get(name, 0), quoted
    assert theirs, f"tshark sees no DNS in {name}"
    res, _ = core_run([path])
    ours = res.dns
    # Queries: the same (ports, id, name, qtype), at the time of the first copy.
    t_q: dict = {}
    for m in theirs:
        if not m["response"]:
            t_q.setdefault((m["ports"], m["id"], m["name"], m["qtype"]), m["ts"])
    o_q = {((r.srcaddr, r.srcport, r.dstaddr, r.dstport), r.trans_id, r.query, r.qtype): r.ts
           for r in ours if "no_query" not in r.tags}
    for k, ts in t_q.items():
        assert k in o_q, f"query only tshark found: {k}"
        assert o_q[k] == pytest.approx(ts, abs=2e-6), k
    # Responses: id, name, qtype, rcode and answers equal.
    t_r = Counter((_rev(m["ports"]), m["id"], m["name"], m["qtype"], m["rcode"], m["answers"])
                  for m in theirs if m["response"])
    o_r = Counter(((r.srcaddr, r.srcport, r.dstaddr, r.dstport), r.trans_id, r.query, r.qtype, r.rcode, _ours_answers(r))
                  for r in ours if r.rcode is not None)
    assert dict(t_r - o_r) == {}, f"responses only tshark found (or read differently): {dict(t_r - o_r)}"
    assert dict(o_r - t_r) == {}, f"responses only we found: {dict(o_r - t_r)}"
    reason, extra = EXPECTED.get(name, ("", 0))
    tports = {m["ports"] for m in theirs} | {_rev(m["ports"]) for m in theirs}
    only_ours = [r for r in ours if (r.srcaddr, r.srcport, r.dstaddr, r.dstport) not in tports]
    assert len(only_ours) == extra, reason or f"a difference that is not listed: {only_ours}"
    if reason == MDNS_LLMNR:
        assert {r.dstport for r in only_ours} == {5353, 5355}


def test_no_flow_named_dns_without_dns_in_it(tshark):
    """Over the whole corpus, a flow we name dns by content is one tshark decodes DNS (or its
    multicast variants) in: the content verdict makes no false positives here."""
    from tests.conftest import corpus_files
    for path in corpus_files("*.pcap"):
        res, _ = core_run([path])
        named = {tuple(sorted((f.srcport, f.dstport))) for f in res.flows
                 if f.app_proto == "dns" and f.app_proto_source == "content"}
        if not named:
            continue
        out = subprocess.run([tshark, "-n", "-r", str(path), "-Y", "dns or mdns or llmnr",
                              "-T", "fields", "-E", "occurrence=l", "-e", "udp.srcport",
                              "-e", "udp.dstport", "-e", "tcp.srcport", "-e", "tcp.dstport"],
                             capture_output=True, text=True, check=True).stdout
        seen = {tuple(sorted(int(x) for x in line.split("\t") if x)[-2:])
                for line in out.splitlines()}
        assert named <= seen, f"{path.name}: flows named dns without DNS: {named - seen}"
