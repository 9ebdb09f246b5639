"""End to end for DNS (docs/dns.md, docs/detectors/dns_tunnel.md, nxdomain_storm.md): a real DNS
server (bench/dns_lab.py, UDP and TCP on port 53) in the mirrored namespace, clients in the
client namespace doing normal lookups, an iodine-style burst of long random subdomains with
NULL/TXT answers, an NXDOMAIN storm and several lookups over one TCP connection. tcpdump in
the collector records the mirrored VXLAN; the real `mirrorscope analyze` must raise the two DNS
alerts naming the client, and our DNS records of that capture must match tshark's reading
(the comparison of tests/test_dns_tshark_differential.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from lab_env import CLIENT, ROOT, SERVER, lab_up
from test_detectors_lab import analyze, mirrored_capture

from tests.dns_helpers import core_run
from tests.test_dns_tshark_differential import _ours_answers, _rev, tshark_dns
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
PREFIX = os.environ.get("MIRRORSCOPE_E2E_DNS_PREFIX", "msd-")
TOOLS = ("ip", "tc", "ethtool", "tcpdump", "tshark")
DNS_LAB = ROOT / "bench" / "dns_lab.py"


def test_dns_tunnel_and_nxdomain_storm_through_the_mirror(tmp_path):
    with lab_up(PREFIX, TOOLS) as lab:
        server = subprocess.Popen(lab.ns(lab.src) + [sys.executable, str(DNS_LAB), "server",
                                                     SERVER, "60"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            wait_until(lambda: server.stdout.readline().strip() == "ready", 10,
                       interval=0, what="the DNS server")
            cap = tmp_path / "dns.pcap"
            client = lambda *a: lab.run(lab.client, sys.executable, str(DNS_LAB), "client",  # noqa: E731
                                        SERVER, *a, timeout=120)
            with mirrored_capture(lab, cap):
                client("normal", "150", "1")
                client("tcp", "20", "2")
                client("tunnel", "150", "3")
                client("normal", "50", "4")
                client("nxstorm", "80", "5")
                time.sleep(0.5)
        finally:
            server.terminate()
            server.wait(10)
    alerts, summary = analyze(cap, tmp_path / "out")
    for a in alerts:
        print(a["type"], a["source"], a["targets"], a["evidence"])
    got = {(a["type"], a["source"], tuple(a["targets"])) for a in alerts}
    assert ("dns_tunnel", CLIENT, ("tunnel.lab",)) in got, alerts
    assert ("nxdomain_storm", CLIENT, (SERVER,)) in got, alerts
    assert {a["type"] for a in alerts} == {"dns_tunnel", "nxdomain_storm"}, alerts  # ok.lab quiet

    # The records of the lab capture against tshark, as for the corpus.
    res, core = core_run([cap])
    recs = res.dns
    assert len(recs) == 150 + 20 + 150 + 50 + 80
    assert Counter(r.transport for r in recs) == {"udp": 430, "tcp": 20}
    assert all(r.rtt is not None and not r.tags for r in recs), \
        [r for r in recs if r.tags or r.rtt is None][:3]
    assert {f.app_proto_source for f in res.flows if f.app_proto == "dns"} == {"content"}
    theirs = tshark_dns("tshark", cap)
    t_r = Counter((_rev(m["ports"]), m["id"],
                   m["name"], m["qtype"], m["rcode"], m["answers"]) for m in theirs if m["response"])
    o_r = Counter(((r.srcaddr, r.srcport, r.dstaddr, r.dstport), r.trans_id, r.query, r.qtype,
                   r.rcode, _ours_answers(r)) for r in recs)
    assert len(t_r) > 0 and t_r == o_r, (dict(t_r - o_r), dict(o_r - t_r))
