"""End to end for the detectors (docs/detectors/): real attack tools (nmap, hping3, curl) in the
mirror lab, inside normal background HTTP traffic. tcpdump in the collector namespace records
the mirrored VXLAN (UDP 4789) while a scenario runs; the real `mirrorscope analyze` reads that
capture and each scenario must raise the right alert type naming the right source, while a long
benign HTTP load raises none.

The lab uses its own prefix (td6-, or MIRRORSCOPE_E2E_DETECT_PREFIX) so it never collides with
other lab users, and gets 20 extra addresses on the server side (198.18.0.10-29 on the mirrored
NIC) for the host sweep. Every command is bounded by a timeout; the lab is always torn down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lab_env import CLIENT, SERVER, Lab, lab_up, serve_http
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
PREFIX = os.environ.get("MIRRORSCOPE_E2E_DETECT_PREFIX", "td6-")
EXTRA = [f"198.18.0.{i}" for i in range(10, 30)]  # host sweep targets (20; threshold 16)
MIRRORSCOPE = Path(sys.executable).with_name("mirrorscope")
TOOLS = ("ip", "tc", "ethtool", "curl", "tcpdump", "nmap", "hping3", "ab")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_up(PREFIX, TOOLS) as lab:
        for a in EXTRA:
            subprocess.run(["ip", "-n", lab.src, "addr", "add", f"{a}/24", "dev", "wl0"],
                           check=True, timeout=10, capture_output=True)
        yield lab


@pytest.fixture(scope="module")
def web(lab, tmp_path_factory) -> Iterator[str]:
    """A real HTTP server (Python's threaded http.server) on SERVER:80 in the mirrored
    namespace; answers on every extra address too."""
    root = tmp_path_factory.mktemp("www")
    (root / "index.html").write_text("<html><body>" + "mirrorscope " * 40 + "</body></html>\n")
    with serve_http(lab, root, bind="0.0.0.0") as url:
        yield url


def _stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def background_http(lab, url: str, seconds: int = 60):
    """Normal traffic: a curl loop from the client, ~5 requests a second."""
    loop = (f"while :; do curl -s -o /dev/null -m 2 {url}/index.html; "
            f"curl -s -o /dev/null -m 2 {url}/; sleep 0.15; done")
    p = subprocess.Popen(lab.ns(lab.client) + ["timeout", str(seconds), "bash", "-c", loop],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        yield p
    finally:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        p.wait(10)


@contextmanager
def mirrored_capture(lab, path: Path):
    """tcpdump on the collector's eth0: the VXLAN copies, as a mirror target gets them."""
    p = subprocess.Popen(lab.ns(lab.collector) + ["timeout", "120", "tcpdump", "-i", "eth0",
                                                  "-n", "-s", "9216", "-B", "65536", "-Z", "root",
                                                  "-w", str(path), "udp", "port", "4789"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def listening() -> bool:
            line = p.stderr.readline()
            if not line and p.poll() is not None:
                pytest.fail(f"tcpdump exited with {p.returncode}", pytrace=False)
            return "listening on" in line
        wait_until(listening, 10, interval=0, what="tcpdump to start listening")
        yield p
        time.sleep(1.0)  # the last mirror copies
    finally:
        # timeout(1) forwards the signal to tcpdump, which flushes the file and exits
        _stop(p, signal.SIGINT)


def analyze(cap: Path, out: Path) -> tuple[list[dict], dict]:
    r = subprocess.run([str(MIRRORSCOPE), "analyze", str(cap), "--out", str(out), "--no-progress",
                        "--json"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    alerts = [json.loads(x) for x in (out / "alerts.jsonl").read_text().splitlines() if x]
    return alerts, summary


def scenario(lab, web, tmp_path, attack) -> tuple[list[dict], dict]:
    cap = tmp_path / "mirror.pcap"
    with mirrored_capture(lab, cap), background_http(lab, web):
        time.sleep(1.5)  # background traffic first
        attack()
        time.sleep(1.0)
    alerts, summary = analyze(cap, tmp_path / "out")
    print(f"{summary['decoded']} packets, {summary['flows']} flows, "
          f"{summary['http_transactions']} HTTP; alerts:")
    for a in alerts:
        print(f"  {a['type']} {a['severity']} source={a['source']} targets={a['targets'][:4]} "
              f"evidence={a['evidence']}")
    assert summary["http_transactions"] > 5, "no background HTTP traffic was seen"
    return alerts, summary


def of_type(alerts, t):
    return [a for a in alerts if a["type"] == t]


def describe(alerts):
    return [(a["type"], a["source"], a["summary"]) for a in alerts]


def test_nmap_syn_scan(lab, web, tmp_path):
    alerts, _ = scenario(lab, web, tmp_path, lambda: lab.run(
        lab.client, "nmap", "-sS", "-Pn", "-n", "-T4", "--max-retries", "1", "-p", "1-300",
        SERVER, timeout=60))
    ps = of_type(alerts, "port_scan")
    assert ps, describe(alerts)
    assert ps[0]["source"] == CLIENT and ps[0]["targets"] == [SERVER]
    assert ps[0]["evidence"]["ports"] >= 20


def test_nmap_connect_scan(lab, web, tmp_path):
    alerts, _ = scenario(lab, web, tmp_path, lambda: lab.run(
        lab.client, "nmap", "-sT", "-Pn", "-n", "-T4", "--max-retries", "1", "-p", "1-300",
        SERVER, timeout=60))
    ps = of_type(alerts, "port_scan")
    assert ps, describe(alerts)
    assert ps[0]["source"] == CLIENT and ps[0]["targets"] == [SERVER]


def test_nmap_host_sweep(lab, web, tmp_path):
    alerts, _ = scenario(lab, web, tmp_path, lambda: lab.run(
        lab.client, "nmap", "-sn", "-n", "--disable-arp-ping", "-T4",
        "198.18.0.10-29", timeout=60))
    hs = of_type(alerts, "host_sweep")
    assert hs, describe(alerts)
    assert {a["source"] for a in hs} == {CLIENT}
    a = hs[0]
    assert a["evidence"]["hosts"] >= 16
    assert set(a["targets"][1:]) <= set(EXTRA)
    assert not of_type(alerts, "port_scan"), describe(alerts)


def test_hping3_syn_flood(lab, web, tmp_path):
    def flood():
        # --flood ignores -c: bound it with timeout(1); exit 124 is the expected end
        lab.run(lab.client, "timeout", "2", "hping3", "-S", "-p", "80", "--flood", SERVER,
                check=False, timeout=20)
    alerts, _ = scenario(lab, web, tmp_path, flood)
    sf = of_type(alerts, "syn_flood")
    assert sf, describe(alerts)
    assert sf[0]["source"] == CLIENT and sf[0]["targets"] == [f"{SERVER}:80"]
    assert sf[0]["evidence"]["half_open"] >= 200


def test_repeated_connections_to_closed_port(lab, web, tmp_path):
    def knock():
        for _ in range(8):
            r = lab.run(lab.client, "curl", "-s", "-m", "2", f"http://{SERVER}:81/", check=False)
            assert r.returncode == 7  # connection refused
            time.sleep(0.1)
    alerts, _ = scenario(lab, web, tmp_path, knock)
    ua = of_type(alerts, "unanswered_connections")
    assert ua, describe(alerts)
    assert ua[0]["source"] == CLIENT and ua[0]["targets"] == [f"{SERVER}:81"]
    assert ua[0]["evidence"]["refused"] >= 5
    assert [a["type"] for a in alerts] == ["unanswered_connections"], describe(alerts)


ATTACK_URIS = [
    "/../../../../etc/passwd",
    "/static/..%2f..%2f..%2fetc%2fshadow",
    "/item?id=1%27%20OR%201=1--",
    "/search?q=1+UNION+SELECT+username,password+FROM+users",
    "/ping?host=127.0.0.1;cat%20/etc/passwd",
    "/cgi-bin/test?x=$(id)",
    "/index.php?page=....//....//etc/passwd",
]


def test_curl_traversal_and_injection(lab, web, tmp_path):
    def burst():
        for uri in ATTACK_URIS:
            lab.run(lab.client, "curl", "-s", "-o", "/dev/null", "-m", "3", "--path-as-is",
                    "-g", f"http://{SERVER}{uri}", check=False)
    alerts, _ = scenario(lab, web, tmp_path, burst)
    ha = of_type(alerts, "http_attack")
    assert ha, describe(alerts)
    a = ha[0]
    assert a["source"] == CLIENT and a["targets"] == [f"{SERVER}:80"]
    assert a["evidence"]["requests"] >= 3
    assert {"path_traversal", "sql_injection", "shell_injection"} & set(a["evidence"])
    assert [x["type"] for x in alerts] == ["http_attack"], describe(alerts)


def test_benign_http_load_raises_nothing(lab, web, tmp_path):
    """~12 s of ApacheBench (4 concurrent clients) plus the curl loop: no alert at all."""
    alerts, summary = scenario(lab, web, tmp_path, lambda: lab.run(
        lab.client, "ab", "-q", "-c", "4", "-t", "12", "-n", "1000000", "-s", "5",
        f"{web}/index.html", check=False, timeout=40))
    assert summary["http_transactions"] > 1000, summary["http_transactions"]
    assert alerts == [], describe(alerts)
