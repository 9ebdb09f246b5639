"""End to end through the mirror lab: curl talks to a real HTTP server in the mirrored
namespace, tc mirrors both directions into kernel VXLAN (UDP 4789), and `mirrorscope collect
--embedded` in the collector namespace writes the flows curl made."""

from __future__ import annotations

import json

import msgspec
import pytest
from lab_env import CLIENT, MIRROR_SRC, SERVER, VNI

from schemas.records import FlowRecord
from tests.services.collector_proc import Collector, metric_value
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
M = "mirrorscope_collector_"
CURL_PORTS = (41001, 41002, 41003)  # curl's --local-port: each flow is known in advance
FILTER_PORT = 41011  # (a port the first test used is in TIME_WAIT for a minute)


def start_collector(lab, tmp_path, *extra: str) -> Collector:
    vni_map = tmp_path / "vnis.yaml"
    vni_map.write_text(f"vnis:\n  {VNI}: {{session_id: tms-lab, interface_id: eni-lab0, "
                       "instance_id: i-lab0, vpc_id: vpc-lab, subnet_id: subnet-lab, "
                       "account_id: '000000000000', region: lab-1}\n")
    c = Collector(["--embedded", "--out", str(tmp_path / "out"), "--listen", "0.0.0.0",
                   "--port", "4789", "--source-cidr", "198.18.1.0/24", "--vni", str(VNI),
                   "--vni-map", str(vni_map), "--health-port", "0", "--metrics-port", "0",
                   "--linger-ms", "10", *extra],
                  tmp_path, prefix=lab.ns(lab.collector))
    c.start()
    try:
        c.wait_ready(workers=1, timeout=30)
    except Exception:
        c.kill()
        raise
    return c


def settle(c: Collector, timeout: float = 10.0) -> float:
    """Wait until the received count stops growing (the mirror copies have all arrived)."""
    seen: list[float] = []

    def steady():
        seen.append(metric_value(c.metrics(), M + "datagrams_received_total"))
        last3 = seen[-3:]
        return last3[0] if len(last3) == 3 and last3[0] > 0 and len(set(last3)) == 1 else 0.0
    return wait_until(steady, timeout, interval=0.4, what="the received count to stop changing",
                      details=c.tail)


def curl(lab, url: str, port: int) -> str:
    r = lab.run(lab.client, "curl", "-s", "-S", "-m", "10", "--local-port", str(port),
                "-o", "/dev/null", "-w", "%{http_code}", url)
    return r.stdout.strip()


def read_flows(path) -> list[FlowRecord]:
    dec = msgspec.json.Decoder(FlowRecord)
    return [dec.decode(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_lab_http_through_embedded_collector(lab, http_server, tmp_path):
    c = start_collector(lab, tmp_path)
    try:
        code, body = c.health()
        assert code == 200, body
        assert curl(lab, f"{http_server}/index.html", CURL_PORTS[0]) == "200"
        assert curl(lab, f"{http_server}/big.bin", CURL_PORTS[1]) == "200"
        assert curl(lab, f"{http_server}/missing", CURL_PORTS[2]) == "404"
        lab.run(lab.client, "ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER)
        settle(c)
    finally:
        s = c.stop()
    t = s["totals"]
    assert s["reconciled"], s["problems"]
    assert t["received"] > 60
    assert sum(t["drops"].values()) == 0
    assert t["published"] == t["decoded"] == t["received"]
    assert t["kernel_drops"] == 0
    assert t["payload_full"] > 0  # HTTP on port 80 keeps its payload

    flows = read_flows(tmp_path / "out" / "flows.jsonl")
    tcp = {f.srcport: f for f in flows if f.protocol == 6 and f.srcaddr == CLIENT}
    for port in CURL_PORTS:
        f = tcp.get(port)
        assert f is not None, f"no flow for curl's port {port}: {[x.srcport for x in flows]}"
        assert (f.dstaddr, f.dstport) == (SERVER, 80)
        assert f.conn_state == "SF" and f.orig_pkts > 0 and f.resp_pkts > 0
        assert f.vni == VNI and f.mirror_source == MIRROR_SRC
        # VNI enrichment from the mapping file.
        assert (f.interface_id, f.instance_id, f.vpc_id, f.subnet_id, f.account_id, f.region) == \
            ("eni-lab0", "i-lab0", "vpc-lab", "subnet-lab", "000000000000", "lab-1")
    assert tcp[CURL_PORTS[1]].resp_bytes > 64 * 1024  # the 64 KB download, both directions seen
    assert any(f.protocol == 1 and f.srcaddr == CLIENT for f in flows)  # the ping

    http = [json.loads(x) for x in (tmp_path / "out" / "http.jsonl").read_text().splitlines()]
    uris = {(h.get("uri"), h.get("status_code")) for h in http}
    assert {("/index.html", 200), ("/big.bin", 200), ("/missing", 404)} <= uris
    summary = json.loads((tmp_path / "out" / "collect-summary.json").read_text())
    assert summary["totals"]["received"] == t["received"]


def test_lab_local_mirror_filter(lab, http_server, tmp_path):
    """A local filter in the Terraform module's rule format: accept TCP to/from port 80,
    everything else (the ping) is rejected by "no match rejects", and counted."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("""
- {rule_number: 100, direction: ingress, action: accept, protocol: 6,
   source_cidr: 0.0.0.0/0, destination_cidr: 198.18.0.0/24,
   destination_port_range: {from_port: 80, to_port: 80}}
- {rule_number: 100, direction: egress, action: accept, protocol: 6,
   source_cidr: 198.18.0.0/24, destination_cidr: 0.0.0.0/0,
   source_port_range: {from_port: 80, to_port: 80}}
""")
    c = start_collector(lab, tmp_path, "--filter-rules", str(rules))
    try:
        assert curl(lab, f"{http_server}/index.html", FILTER_PORT) == "200"
        lab.run(lab.client, "ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER)
        settle(c)
    finally:
        s = c.stop()
    t = s["totals"]
    assert s["reconciled"], s["problems"]
    assert t["filtered_out"] >= 6  # 3 echo requests + 3 replies
    assert t["published"] + t["filtered_out"] == t["decoded"] == t["received"]
    flows = read_flows(tmp_path / "out" / "flows.jsonl")
    assert not [f for f in flows if f.protocol == 1]
    assert any(f.protocol == 6 and f.srcport == FILTER_PORT for f in flows)
