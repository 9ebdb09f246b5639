"""Live output through the mirror lab: curl talks to real HTTP servers in the mirrored
namespace, `mirrorscope collect --embedded` keeps running, and each flow is in flows.jsonl
within 2 s of its last packet -- also HTTP on a port outside the collector's default payload
ports, which `analyze` finds and a live collector used to miss."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from lab_env import CLIENT, SERVER

from tests.services.collector_proc import Collector

pytestmark = pytest.mark.e2e
PORTS = (41021, 41022)  # curl's --local-port: the flows are known in advance
ODD_PORT = 8765  # not among collectors.config.DEFAULT_PAYLOAD_PORTS


def start_collector(lab, tmp_path, *extra: str) -> Collector:
    c = Collector(["--embedded", "--out", str(tmp_path / "out"), "--listen", "0.0.0.0",
                   "--port", "4789", "--source-cidr", "198.18.1.0/24", "--health-port", "0",
                   "--metrics-port", "0", "--linger-ms", "10", "--close-linger", "0.5",
                   "--status-interval", "1", *extra],
                  tmp_path, prefix=lab.ns(lab.collector))
    c.start()
    try:
        c.wait_ready(workers=1, timeout=30)
    except Exception:
        c.kill()
        raise
    return c


def wait_for_flow(path, srcport: int, c: Collector, timeout: float = 10.0) -> tuple[dict, float]:
    """Poll flows.jsonl (as `tail -f` would) until the flow from ``srcport`` is there; return
    it and the wall-clock time it was first seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                f = json.loads(line)
                if f["srcport"] == srcport and f["srcaddr"] == CLIENT:
                    return f, time.time()
        assert c.proc.poll() is None, f"the collector stopped:\n{c.tail()}"
        time.sleep(0.05)
    raise AssertionError(f"no flow from port {srcport} in {path} after {timeout} s:\n{c.tail()}")


def test_flows_appear_live_within_2s_of_their_end(lab, http_server, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "odd.txt").write_text("served on an odd port\n")
    odd = subprocess.Popen(lab.ns(lab.src) + ["python3", "-m", "http.server", str(ODD_PORT),
                                              "--bind", SERVER, "--directory", str(root)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = start_collector(lab, tmp_path)
    flows_path = tmp_path / "out" / "flows.jsonl"
    try:
        deadline = time.monotonic() + 10
        while lab.run(lab.client, "curl", "-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}",
                      f"http://{SERVER}:{ODD_PORT}/odd.txt", check=False).stdout != "200":
            assert time.monotonic() < deadline, "the odd-port HTTP server did not answer"
            time.sleep(0.1)
        lags = []
        for port, url in ((PORTS[0], f"{http_server}/index.html"),
                          (PORTS[1], f"http://{SERVER}:{ODD_PORT}/odd.txt")):
            r = lab.run(lab.client, "curl", "-s", "-S", "-m", "10", "--local-port", str(port),
                        "-o", "/dev/null", "-w", "%{http_code}", url)
            assert r.stdout.strip() == "200"
            f, seen = wait_for_flow(flows_path, port, c)
            assert f["conn_state"] == "SF" and f["end_time"] is not None
            lags.append(seen - f["end_time"])
            assert c.proc.poll() is None  # written while the collector runs on
        assert max(lags) <= 2.0, f"flows appeared {lags} s after their last packet"
        time.sleep(1.2)  # at least one status line
        http = [json.loads(x) for x in (tmp_path / "out" / "http.jsonl").read_text().splitlines()]
        assert {(h["uri"], h["dstport"], h["status_code"]) for h in http} >= \
            {("/index.html", 80, 200), ("/odd.txt", ODD_PORT, 200)}
    finally:
        s = c.stop()
        odd.terminate()
        odd.wait(10)
    assert s["reconciled"], s["problems"]
    status = [e["msg"] for e in c.logs() if str(e.get("msg", "")).startswith("status: ")]
    assert status and "flows ended" in status[-1]
    # The same summary as `analyze`: summary.json with the final counters, printed on stderr.
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames"] == s["totals"]["received"]
    assert summary["flows"] >= 2 and summary["http_transactions"] >= 2
    assert "wrote " in c.stderr_path.read_text()
    print(f"live lag (s from the flow's last packet to flows.jsonl): {lags}")
