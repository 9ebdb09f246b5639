"""Default-deny mirror sources: a live collector takes VXLAN only from source_cidrs or from the
mirror sources EC2 discovery finds; anything else is refused and counted by reason.

Real UDP over loopback: every 127.0.0.0/8 address is local on Linux, so a socket bound to
127.0.0.2 sends from an "unlisted" source while one bound to 127.0.0.1 is the listed one. EC2
discovery runs against moto's server; moto lets a VPC use a loopback CIDR, so the discovered
mirror source can be a loopback address this machine can send from."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3

from tests.services.collector_proc import Collector, metric_value
from tests.services.fixtures import aws, moto_server  # noqa: F401
from tests.services.traffic import tcp_flows

M = "mirrorscope_collector_"
EXE = str(Path(sys.executable).with_name("mirrorscope"))


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_from(src: str, datagrams, port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        for d in datagrams:
            s.sendto(d.payload, ("127.0.0.1", port))
            time.sleep(0.0005)  # a loopback burst must not overrun the socket buffer
    return len(datagrams)


def run_collector(tmp_path, port, *extra, env=None) -> Collector:
    c = Collector(["--transport", "null", "--listen", "127.0.0.1", "--port", str(port),
                   "--processes", "1", "--health-port", "0", "--metrics-port", "0", *extra],
                  tmp_path, env={"MIRRORSCOPE_STATS_INTERVAL_S": "0.2", **(env or {})}).start()
    c.wait_ready(workers=1)
    return c


def wait_received(c: Collector, n: int) -> str:
    deadline = time.monotonic() + 30
    while True:
        text = c.metrics()
        if metric_value(text, M + "datagrams_received_total") >= n:
            return text
        assert time.monotonic() < deadline, c.tail()
        time.sleep(0.2)


def test_unlisted_source_is_refused_and_counted(tmp_path):
    port = udp_port()
    c = run_collector(tmp_path, port, "--source-cidr", "127.0.0.1/32")
    try:
        good = send_from("127.0.0.1", tcp_flows(20, seed=1), port)
        bad = send_from("127.0.0.2", tcp_flows(30, seed=2, client_net="10.9.0.0"), port)
        text = wait_received(c, good + bad)
        assert metric_value(text, M + "datagrams_dropped_total",
                            reason="source_not_allowed") == bad
    finally:
        s = c.stop()
    t = s["totals"]
    assert s["reconciled"], s["problems"]
    assert t["received"] == good + bad
    assert t["drops"]["source_not_allowed"] == bad  # in the summary too
    assert t["published"] == t["decoded"] == good  # nothing of the spoofed source went on


def test_nothing_allowed_refuses_to_start_and_any_source_is_explicit(tmp_path):
    r = subprocess.run([EXE, "collect", "--transport", "null", "--listen", "127.0.0.1",
                        "--port", str(udp_port()), "--health-port", "0", "--metrics-port", "0"],
                       capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items()
                            if not k.startswith("MIRRORSCOPE_")})
    assert r.returncode == 2 and "no mirror sources allowed" in r.stderr, r.stderr
    assert "--accept-any-source" in r.stderr
    port = udp_port()
    c = run_collector(tmp_path, port, "--accept-any-source")
    try:
        n = send_from("127.0.0.2", tcp_flows(10, seed=3), port)
        wait_received(c, n)
    finally:
        s = c.stop()
    assert s["totals"]["published"] == n and s["totals"]["drops"]["source_not_allowed"] == 0
    assert c.events("accept_any_source: accepting VXLAN from any source (spoofable)")


def test_sources_from_the_vni_map(tmp_path):
    vni_map = tmp_path / "vnis.yaml"
    vni_map.write_text("1234: {interface_id: eni-1, source_ip: 127.0.0.3}\n")
    port = udp_port()
    c = run_collector(tmp_path, port, "--vni-map", str(vni_map), "--source-cidr", "10.0.0.0/8")
    try:
        good = send_from("127.0.0.3", tcp_flows(10, seed=4), port)
        bad = send_from("127.0.0.2", tcp_flows(10, seed=5), port)
        wait_received(c, good + bad)
    finally:
        s = c.stop()
    assert s["totals"]["published"] == good
    assert s["totals"]["drops"]["source_not_allowed"] == bad


def test_discovered_mirror_source_is_accepted(tmp_path, aws):  # noqa: F811
    """--discover-vnis alone: the mirrored ENI's primary IP (found through EC2) is allowed,
    every other source refused."""
    ec2 = boto3.client("ec2", endpoint_url=aws, region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"]
    eni = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="127.0.0.4")
    eni_id = eni["NetworkInterface"]["NetworkInterfaceId"]
    target_eni = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="127.0.0.9")
    target = ec2.create_traffic_mirror_target(
        NetworkInterfaceId=target_eni["NetworkInterface"]["NetworkInterfaceId"])
    filt = ec2.create_traffic_mirror_filter()["TrafficMirrorFilter"]["TrafficMirrorFilterId"]
    ec2.create_traffic_mirror_session(
        NetworkInterfaceId=eni_id,
        TrafficMirrorTargetId=target["TrafficMirrorTarget"]["TrafficMirrorTargetId"],
        TrafficMirrorFilterId=filt, SessionNumber=1, VirtualNetworkId=1234)
    port = udp_port()
    c = run_collector(tmp_path, port, "--discover-vnis", env={
        "MIRRORSCOPE_ENRICHMENT_ENDPOINT_URL": aws, "MIRRORSCOPE_ENRICHMENT_REGION": "us-east-1"})
    try:
        good = send_from("127.0.0.4", tcp_flows(10, seed=6), port)
        bad = send_from("127.0.0.9", tcp_flows(10, seed=7), port)  # the target is no source
        wait_received(c, good + bad)
    finally:
        s = c.stop()
    assert s["totals"]["published"] == good
    assert s["totals"]["drops"]["source_not_allowed"] == bad
