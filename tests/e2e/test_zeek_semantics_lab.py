"""Issue 17 through the mirror lab: real kernel mirroring of a client that sends its HTTP request
a few bytes per TCP segment (an IDS evasion trick), and of a UDP request/answer exchange.
`mirrorscope collect --embedded` in the collector namespace writes what a user reads."""

from __future__ import annotations

import json
import sys

import pytest
from lab_env import CLIENT, SERVER
from test_collect_lab import read_flows, settle, start_collector

pytestmark = pytest.mark.e2e
SLOW_PORT = 41021
UDP_PORT = 41022

# Runs in the client namespace: TCP_NODELAY and a pause between sends put each piece in a
# segment of its own (RFC 9293 3.7.4: Nagle would otherwise merge them).
TINY = f"""
import socket, time
s = socket.create_connection(("{SERVER}", 80), source_address=("0.0.0.0", {SLOW_PORT}), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for piece in (b"G", b"E", b"T", b" /ind", b"ex.html HTTP/1.1\\r\\nHost: lab\\r\\n", b"Connection: close\\r\\n\\r\\n"):
    s.sendall(piece)
    time.sleep(0.05)
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.split(b"\\r\\n", 1)[0].decode())
"""

# A UDP "request" to the server and its answer (a one-shot echo in the mirrored namespace).
ECHO = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{SERVER}", 5300))
s.settimeout(10)
data, peer = s.recvfrom(2048)
s.sendto(b"answer:" + data, peer)
"""
ASK = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {UDP_PORT}))
s.settimeout(10)
s.sendto(b"question", ("{SERVER}", 5300))
print(s.recvfrom(2048)[0].decode())
"""


def test_lab_request_sent_in_tiny_segments_and_udp_history(lab, http_server, tmp_path):
    import subprocess
    c = start_collector(lab, tmp_path)
    try:
        r = lab.run(lab.client, sys.executable, "-c", TINY)
        assert r.stdout.strip().startswith("HTTP/1.0 200") or r.stdout.strip().startswith("HTTP/1.1 200")
        echo = subprocess.Popen([*lab.ns(lab.src), sys.executable, "-c", ECHO])
        try:
            import time
            time.sleep(0.5)  # the echo is listening
            assert lab.run(lab.client, sys.executable, "-c", ASK).stdout.strip() == "answer:question"
        finally:
            echo.wait(timeout=15)
        settle(c)
    finally:
        c.stop()
    flows = read_flows(tmp_path / "out" / "flows.jsonl")
    [slow] = [f for f in flows if f.protocol == 6 and f.srcport == SLOW_PORT]
    # The request went out in several segments (the flow shows them), and is still HTTP.
    assert slow.orig_pkts >= 8 and slow.app_proto == "http"
    http = [json.loads(x) for x in (tmp_path / "out" / "http.jsonl").read_text().splitlines()]
    assert [(h["method"], h["uri"], h["status_code"]) for h in http if h["srcport"] == SLOW_PORT] \
        == [("GET", "/index.html", 200)]
    # Zeek's UDP analyzer: 'D' for the originator's datagram, 'd' for the responder's.
    [udp] = [f for f in flows if f.protocol == 17 and f.srcaddr == CLIENT and f.srcport == UDP_PORT]
    assert udp.history == "Dd" and udp.conn_state == "SF"
