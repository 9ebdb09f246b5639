"""TCP health through the mirror lab with real kernel TCP loss: retransmissions the mirror sees,
holes it sees filled, and every flow checked against tshark's tcp.analysis.*.

The kernel here has no netem (nor tc's gact action), so the loss is made with what it has: a
token bucket (tc tbf) with a small queue, which tail-drops when the senders outrun its rate,
as a congested link does. Two places on the mirrored path's client side:
- the server's NIC (wl0 in src), AFTER the mirror point (tc's clsact egress hook mirrors a
  packet before the root qdisc queues it): the mirror saw the dropped segment, the client did
  not, and the server's kernel resends it: a resend the mirror sees twice (retransmission);
- the client's NIC, BEFORE the mirror point: a dropped upload segment never reaches the tap,
  the next one does (out of order: a hole), and the client's resend fills the hole.
Every byte of every connection crosses the tap in the end (TCP delivers them all), so no
byte may count as missed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import pytest
from lab_env import SERVER
from test_detectors_lab import mirrored_capture

from tests.conftest import NO_TIMEOUTS, run
from tests.tcp_health_tshark import compare

pytestmark = pytest.mark.e2e
PORT = 5001
CONNS = 3
DOWN = 1_000_000  # bytes the server sends on each connection
UP = 300_000  # bytes each client uploads first

SERVER_PY = f"""
import socket, threading
srv = socket.create_server(("{SERVER}", {PORT}), backlog=16)
def serve(c):
    with c:
        got = 0
        while got < {UP}:
            b = c.recv(65536)
            if not b:
                return
            got += len(b)
        c.sendall(b"d" * {DOWN})
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
for _ in range({CONNS}):
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,)).start()
"""

CLIENT_PY = f"""
import socket, threading
ok = []
def one():
    s = socket.create_connection(("{SERVER}", {PORT}), timeout=60)
    s.sendall(b"u" * {UP})
    got = 0
    while b := s.recv(65536):
        got += len(b)
    s.close()
    ok.append(got)
ts = [threading.Thread(target=one) for _ in range({CONNS})]
for t in ts: t.start()
for t in ts: t.join()
print(sorted(ok))
"""


def _tbf(lab, ns: str, dev: str) -> None:
    lab.run(ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", "40mbit",
            "burst", "16kb", "limit", "12kb")


def test_lab_loss_shows_as_retransmissions_and_filled_holes_agreeing_with_tshark(
        lab, tmp_path, tshark):
    _tbf(lab, lab.src, "wl0")
    _tbf(lab, lab.client, "eth0")
    cap = tmp_path / "loss.pcap"
    try:
        server = subprocess.Popen([*lab.ns(lab.src), sys.executable, "-c", SERVER_PY])
        try:
            with mirrored_capture(lab, cap):
                time.sleep(0.5)  # the server listening
                r = lab.run(lab.client, sys.executable, "-c", CLIENT_PY, timeout=120)
                assert r.stdout.strip() == str([DOWN] * CONNS), r.stderr
        finally:
            server.kill()
            server.wait(10)
    finally:
        for ns, dev in ((lab.src, "wl0"), (lab.client, "eth0")):
            lab.run(ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)

    _, flows = run([cap], tmp_path, NO_TIMEOUTS)
    mine = [f for f in flows if f.protocol == 6 and f.dstport == PORT]
    assert len(mine) == CONNS
    totals = Counter()
    for f in mine:
        for k in ("resp_retrans_pkts", "resp_retrans_bytes", "orig_ooo_pkts", "orig_retrans_pkts",
                  "resp_ooo_pkts", "missed_bytes"):
            totals[k] += getattr(f, k)
        assert f.handshake_rtt_resp is not None and f.handshake_rtt_orig is not None
    print(dict(totals))
    # Dropped after the tap: the server's resends are seen twice.
    assert totals["resp_retrans_pkts"] > 0 and totals["resp_retrans_bytes"] > 0
    # Dropped before the tap: holes in the upload, each filled by the client's resend.
    assert totals["orig_ooo_pkts"] > 0
    assert totals["missed_bytes"] == 0
    counts, details = compare(cap, flows)
    print(dict(counts))
    assert not details, "\n".join(details[:20])
    assert counts["retx events"] >= totals["resp_retrans_pkts"]
