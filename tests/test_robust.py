"""Hostile input cannot crash, stall or inflate the core (issue 20): an HTTP head over 64 KiB
in every embedded mode, exceptions stopped at the flow boundary, the caps on flows and
detector keys, sequence jumps, and the bad inputs listed as "Low" in the issue."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.records import PacketRecord
from tests.services.collector_proc import Collector, metric_value
from tests.services.traffic import (
    Datagram,
    capture_of,
    ether,
    ipv4,
    send,
    tcp,
    tcp_flows,
    vxlan,
    write_pcap,
)
from stream_app.core import http as http_mod
from stream_app.core.detectors import DetectConfig, InMemoryState
from stream_app.core.flowtable import FlowConfig
from stream_app.core.l7 import L7Config
from stream_app.core.processor import CoreConfig, Processor
from tests.test_http import Conn, transactions

MIRRORSCOPE = str(Path(sys.executable).parent / "mirrorscope")
BIG_HEAD = (b"GET /big HTTP/1.1\r\nHost: lab\r\nX-Pad: " + b"a" * (70 * 1024)
            + b"\r\nUser-Agent: t\r\n\r\n")
NEXT = b"GET /next HTTP/1.1\r\nHost: lab\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
pytestmark = pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")


def hostile_connection(vni: int = 1234, mss: int = 1448) -> list[Datagram]:
    """One keep-alive connection: a request whose head is 70 KiB (sent in MSS-sized
    segments, as a kernel would), its answer, then a normal request and its answer."""
    cli, srv = socket.inet_aton("10.9.0.1"), socket.inet_aton("10.0.0.5")
    cs, ss = 1000, 900_000
    out: list[Datagram] = []

    def add(forward, flags, seq, ack, data=b""):
        ip = (ipv4(cli, srv, 6, tcp(41000, 80, seq, ack, flags, data)) if forward
              else ipv4(srv, cli, 6, tcp(80, 41000, seq, ack, flags, data)))
        out.append(Datagram(vxlan(vni, ether(ip)), 50000 if forward else 50001, vni, 0, forward))

    add(True, 0x02, cs, 0)
    add(False, 0x12, ss, cs + 1)
    c, s = cs + 1, ss + 1
    add(True, 0x10, c, s)
    for req, resp in ((BIG_HEAD, RESP), (NEXT, RESP)):
        for i in range(0, len(req), mss):
            add(True, 0x18, c + i, s, req[i:i + mss])
        c += len(req)
        add(False, 0x18, s, c, resp)
        s += len(resp)
        add(True, 0x10, c, s)
    add(True, 0x11, c, s)
    add(False, 0x11, s, c + 1)
    add(True, 0x10, c + 1, s + 1)
    return out


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the 70 KiB head ----------------------------------------------------------------------------

def test_70k_head_in_analyze_loses_nothing_and_is_reported(tmp_path):
    """It used to recurse until RecursionError: exit 1, empty outputs, no summary."""
    normal = tcp_flows(50)
    hostile = hostile_connection()
    cap = tmp_path / "hostile.pcap"
    write_pcap(cap, capture_of(hostile[:3] + normal + hostile[3:]))
    out = tmp_path / "out"
    p = subprocess.run([MIRRORSCOPE, "analyze", str(cap), "--out", str(out), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["frames"] == s["decoded"] == len(normal) + len(hostile)
    assert s["flows"] == 51 and s["flow_packets"] == s["decoded"]
    assert s["http_transactions"] == 52
    assert s["http_tags"].get("head_too_large") == 1
    assert s["core"]["packet_errors"] == 0 and s["core"]["l7_errors"] == 0
    http = {t["uri"]: t for t in _jsonl(out / "http.jsonl")}
    assert http["/big"]["tags"] == ["head_too_large"] and http["/big"]["status_code"] == 200
    assert http["/big"]["user_agent"] is None  # past the first 64 KiB: not read
    assert http["/next"]["status_code"] == 200 and http["/next"]["method"] == "GET"
    assert json.loads((out / "summary.json").read_text())["flows"] == 51


def test_70k_head_in_embedded_collect_reconciles_and_is_reported(tmp_path):
    """A live embedded collector used to lose its worker (and every open flow, uncounted)."""
    port = _udp_port()
    out = tmp_path / "out"
    c = Collector(["--transport", "embedded", "--out", str(out), "--listen", "127.0.0.1",
                   "--port", str(port), "--source-cidr", "127.0.0.1/32",
                   "--health-port", "0", "--metrics-port", "0"],
                  tmp_path, env={"MIRRORSCOPE_STATS_INTERVAL_S": "0.2"}).start()
    normal = tcp_flows(50)
    hostile = hostile_connection()
    try:
        c.wait_ready()
        for part in (hostile[:3], normal, hostile[3:]):
            send(part, "127.0.0.1", port, sockets=1)
            time.sleep(0.2)  # keep the hostile connection's packets after the others'
        sent = len(normal) + len(hostile)
        deadline = time.monotonic() + 30
        while metric_value(c.metrics(), "mirrorscope_collector_records_published_total") < sent:
            assert time.monotonic() < deadline and c.proc.poll() is None, c.tail()
            time.sleep(0.2)
    finally:
        s = c.stop()
    assert c.proc.returncode == 0
    t = s["totals"]
    assert s["reconciled"], s["problems"]
    assert t["received"] == t["decoded"] == t["published"] == sent
    assert t["publish_dropped"]["worker_crash"] == 0
    assert sum(w["restarts"] for w in s["workers"]) == 0
    assert t["core"]["http_tag_head_too_large"] == 1
    assert t["core"]["packet_errors"] == t["core"]["l7_errors"] == 0
    flows = _jsonl(out / "flows.jsonl")
    assert len(flows) == 51 and sum(f["packets"] for f in flows) == sent
    uris = {h["uri"] for h in _jsonl(out / "http.jsonl")}
    assert {"/big", "/next"} <= uris and len(uris) == 52
    assert json.loads((out / "collect-summary.json").read_text())["reconciled"]


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the flow boundary --------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["c", "python"])
def test_a_failing_http_analysis_is_reported_and_contained(monkeypatch, request, engine):
    """Fault injection (no input is known to raise any more): the parser fails on one
    connection. Its flow and its earlier exchange are still reported, the failure is tagged
    and counted, and the other connection in the same batch is untouched. Both engines: the
    C connection (stream_app/_fastconn.c, whose exception crosses the same flow boundary)
    and the Python analyzer alone."""
    from stream_app.core import l7 as l7_mod
    real = http_mod.MessageStream._start_message

    def failing(self, head, ts):
        if b"/boom" in head:
            raise RuntimeError("injected")
        return real(self, head, ts)
    monkeypatch.setattr(http_mod.MessageStream, "_start_message", failing)
    if engine == "python":
        monkeypatch.setattr(l7_mod, "FastHttp", None)
    else:  # the C connection calls redact_auth for an Authorization header: fail there
        assert l7_mod.FastHttp is not None, "stream_app._fastconn is not built"
        from stream_app import _fastconn
        bind = (l7_mod.HttpTransaction, l7_mod.PacketRecord)

        def failing_auth(value):
            if "boom" in value:
                raise RuntimeError("injected")
            return http_mod.redact_auth(value)
        _fastconn.setup(*bind, failing_auth, http_mod.redact_cookie)
        request.addfinalizer(
            lambda: _fastconn.setup(*bind, http_mod.redact_auth, http_mod.redact_cookie))
    a = Conn().handshake().c(b"GET /ok1 HTTP/1.1\r\n\r\n").s(RESP)
    a.c(b"GET /boom HTTP/1.1\r\nAuthorization: Basic boom\r\n\r\n").s(RESP).close()
    b = Conn(t0=10).handshake().c(b"GET /fine HTTP/1.1\r\n\r\n").s(RESP).close()
    for p in b.pkts:  # another client port: another flow
        p.sport, p.dport = (40001, p.dport) if p.sport == 40000 else (p.sport, 40001)
    core = Processor()
    pkts = sorted(a.pkts + b.pkts, key=lambda p: p.ts_ns)
    res = core.process(pkts)
    end = core.finish()
    flows = res.flows + end.flows
    http = res.http + end.http
    assert sorted(f.packets for f in flows) == sorted([len(a.pkts), len(b.pkts)])
    by_uri = {t.uri: t for t in http}
    assert by_uri["/ok1"].status_code == 200 and by_uri["/fine"].status_code == 200
    assert [t.tags for t in http if "analyzer_error" in t.tags]
    assert core.stats()["l7_errors"] == 1 and "injected" in core.errors[0]


def test_a_packet_the_table_cannot_process_is_counted_and_the_batch_goes_on():
    good = Conn().handshake().close().pkts
    bad = PacketRecord(good[0].ts_ns, None, None, 4, None, b"\x0a\0\0\x02", 6, 1, 2, 0x02, 0, 0,
                       40, 40, 0, b"")
    core = Processor()
    res = core.process(good[:2] + [bad] + good[2:])
    flows = res.flows + core.finish().flows
    assert [f.packets for f in flows] == [len(good)]
    assert core.stats()["packet_errors"] == 1


# -- caps -------------------------------------------------------------------------------------

def _udp_flow_packets(n: int, t0: int = 0) -> list[PacketRecord]:
    return [PacketRecord(t0 + i * 1000, None, None, 4, struct.pack("!I", 0x0A000000 + i),
                         b"\x0a\xff\0\1", 17, 5000 + i % 1000, 53, 0, 0, 0, 60, 60, 0, b"")
            for i in range(n)]


def test_flow_cap_evicts_oldest_first_and_counts_everything():
    core = Processor(CoreConfig(flows=FlowConfig(max_flows=100), detect=None))
    res = core.process(_udp_flow_packets(1000))
    assert len(core.flows.flows) == 100
    assert len(res.flows) == 900 and {f.end_reason for f in res.flows} == {"evicted"}
    assert res.flows[0].srcaddr == "10.0.0.0"  # the oldest went first
    rest = core.finish().flows
    assert len(res.flows) + len(rest) == 1000
    assert sum(f.packets for f in res.flows + rest) == 1000
    assert core.stats()["flows_evicted"] == 900


def test_detector_state_cap_evicts_oldest_keys():
    st = InMemoryState(max_keys=1000)
    for i in range(50_000):
        st.incr(("k", i), 1, 1e12)
    assert len(st) == 1000 and st.stats["evicted_keys"] == 49_000
    assert st.get(("k", 49_999)) == 1 and st.get(("k", 0)) is None


def test_detector_key_cap_applies_through_the_core():
    core = Processor(CoreConfig(detect=DetectConfig(max_keys=500)))
    core.process(_udp_flow_packets(5000))
    core.finish()
    s = core.stats()
    assert s["detector_keys_evicted"] > 0 and s["detector_errors"] == 0
    assert len(core.detectors.state) <= 500


# -- sequence jumps (Low) -------------------------------------------------------------------------

def _jumped(jump: int, mid_body: bool):
    c = Conn().handshake()
    c.c(b"GET /one HTTP/1.1\r\n\r\n").s(RESP)
    if mid_body:  # the jump cuts a request body
        c.c(b"POST /cut HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"z" * 10).s(RESP)
    c.cseq = (c.cseq + jump) & 0xFFFFFFFF
    c.c(b"GET /two HTTP/1.1\r\n\r\n").s(b"HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n")
    c.close()
    core = Processor()
    res = core.process(c.pkts)
    return res.http + core.finish().http, core.stats()


@pytest.mark.parametrize("jump", [1 << 30, (1 << 31) + 5, 3 << 30])
@pytest.mark.parametrize("mid_body", [False, True])
def test_a_sequence_jump_is_counted_and_later_requests_still_pair(jump, mid_body):
    """A jump past any TCP window used to read as an old retransmission (2 GiB and more:
    later requests lost, nothing tagged) or as lost bytes at a message boundary (1 GiB:
    every later response paired with the request before it)."""
    got, stats = _jumped(jump, mid_body)
    by_uri = {t.uri: t for t in got}
    assert by_uri["/one"].status_code == 200
    assert by_uri["/two"].status_code == 404 and "no_response" not in by_uri["/two"].tags
    assert stats["reassembly_jumps"] == 1
    if mid_body:
        assert "gap" in by_uri["/cut"].tags and by_uri["/cut"].status_code == 200


# -- chunk sizes (Low) --------------------------------------------------------------------------

@pytest.mark.parametrize("size", [b"0x10", b"1_0", b"+10", b"-1", b" "])
def test_chunk_sizes_are_hex_digits_only(size):
    """int(x, 16) also takes 0x10, 1_0 and +10: servers disagree on those (a smuggling
    vector), so the body is malformed_chunked, never counted as 16 bytes."""
    body = size + b"\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"
    c = Conn().handshake()
    c.c(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    c.s(RESP).close()
    t = [t for t in transactions(c.pkts) if t.uri == "/up"][0]
    assert "malformed_chunked" in t.tags and t.request_body_len != 16


def test_chunk_size_with_extension_and_upper_case_hex_still_reads():
    c = Conn().handshake()
    c.c(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1A;name=v\r\n" + b"y" * 26 + b"\r\n0\r\n\r\n")
    c.s(RESP).close()
    t = [t for t in transactions(c.pkts) if t.uri == "/up"][0]
    assert t.request_body_len == 26 and t.status_code == 200 and not t.tags


# -- backwards timestamps (Low) -------------------------------------------------------------------

def test_backwards_timestamps_never_give_negative_durations():
    c = Conn(t0=10_000_000_000).handshake().c(b"GET / HTTP/1.1\r\n\r\n").s(RESP).close()
    c.pkts[-2].ts_ns = 1_000  # a clock step back (merged captures, NTP)
    core = Processor(CoreConfig(l7=L7Config()))
    res = core.process(c.pkts)
    flows = res.flows + core.finish().flows
    assert len(flows) == 1
    f = flows[0]
    assert f.duration >= 0 and f.end >= f.start and f.packets == len(c.pkts)


# -- capture files (Low) ------------------------------------------------------------------------

def _capture_bytes(tmp_path: Path, n_flows: int = 20) -> tuple[bytes, int]:
    frames = capture_of(tcp_flows(n_flows))
    p = tmp_path / "plain.pcap"
    write_pcap(p, frames)
    return p.read_bytes(), len(frames)


def _analyze(args: list[str], **kw) -> dict:
    p = subprocess.run([MIRRORSCOPE, "analyze", *args, "--json", "--no-progress"],
                       capture_output=True, timeout=60, **kw)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def test_gzip_capture_through_a_fifo(tmp_path):
    """It used to hang: the file was opened a second time to decompress it."""
    import gzip
    import os
    import threading
    data, n = _capture_bytes(tmp_path)
    fifo = tmp_path / "cap.pcap.gz"
    os.mkfifo(fifo)

    def writer():
        with open(fifo, "wb") as f:
            f.write(gzip.compress(data))
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    s = _analyze([str(fifo), "--out", str(tmp_path / "out")])
    t.join(5)
    assert s["frames"] == s["decoded"] == n and not s["problems"]


def test_gzip_capture_on_stdin(tmp_path):
    """It used to say "unknown format (starts with nothing)"."""
    import gzip
    data, n = _capture_bytes(tmp_path)
    s = _analyze(["/dev/stdin", "--out", str(tmp_path / "out")], input=gzip.compress(data))
    assert s["frames"] == s["decoded"] == n


@pytest.mark.parametrize("fast", [True, False])
def test_damaged_gzip_keeps_every_recoverable_record(tmp_path, fast):
    """A damaged gzip used to lose up to the last MiB decompressed before the damage."""
    import gzip
    import random
    import zlib
    from stream_app.adapters.embedded import analyze
    rnd = random.Random(3)
    # 3 MB of records with incompressible payloads, cut 100 kB before the end of the stream.
    frames = [capture_of(tcp_flows(1))[0][:42] + rnd.randbytes(900) for _ in range(3200)]
    p = tmp_path / "plain.pcap"
    write_pcap(p, frames)
    gz = gzip.compress(p.read_bytes())
    cut = gz[:len(gz) - 100_000]
    recoverable = zlib.decompressobj(wbits=31).decompress(cut)
    expected = 0
    pos = 24
    while pos + 16 <= len(recoverable):
        caplen = struct.unpack_from("<I", recoverable, pos + 8)[0]
        if pos + 16 + caplen > len(recoverable):
            break
        expected += 1
        pos += 16 + caplen
    bad = tmp_path / "cut.pcap.gz"
    bad.write_bytes(cut)
    res = analyze([bad], tmp_path / "out", fast=fast, l7=None, detect=None)
    assert expected > 2000 and res.frames == expected
    assert any("damaged compressed data" in p or "ends inside a record" in p for p in res.problems)


def _pcapng(blocks: list[tuple[int, bytes]]) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)
    shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    out = block(0x0A0D0D0A, shb) + block(1, struct.pack("<HHI", 1, 0, 65535))
    for iface, frame in blocks:
        out += block(6, struct.pack("<IIIII", iface, 0, 1000, len(frame), len(frame)) + frame)
    return out


def test_pcapng_block_naming_an_undefined_interface_is_skipped_not_fatal(tmp_path):
    frames = capture_of(tcp_flows(5))
    blocks = [(0, f) for f in frames]
    blocks.insert(10, (7, frames[0]))  # interface 7 was never described
    p = tmp_path / "bad-iface.pcapng"
    p.write_bytes(_pcapng(blocks))
    s = _analyze([str(p), "--out", str(tmp_path / "out")])
    assert s["frames"] == s["decoded"] == len(frames)
    assert any("interface 7" in m and "skipped" in m for m in s["problems"])


# -- the collector's endpoints (Low) ------------------------------------------------------------

def test_collector_endpoints_bind_the_listen_address_unless_told_otherwise(tmp_path):
    c = Collector(["--transport", "null", "--listen", "127.0.0.1", "--port", str(_udp_port()),
                   "--source-cidr", "127.0.0.1/32", "--health-port", "0", "--metrics-port", "0"],
                  tmp_path).start()
    try:
        c.wait_ready()
        assert c.events("health endpoint")[0]["address"] == "127.0.0.1"
        assert c.events("metrics endpoint")[0]["address"] == "127.0.0.1"
        assert c.health()[0] == 200
    finally:
        c.stop()
    c2 = Collector(["--transport", "null", "--listen", "127.0.0.1", "--port", str(_udp_port()),
                    "--source-cidr", "127.0.0.1/32", "--health-port", "0", "--metrics-port", "0"],
                   tmp_path / "2",
                   env={"MIRRORSCOPE_METRICS_ADDRESS": "0.0.0.0"}).start()
    try:
        c2.wait_ready()
        assert c2.events("metrics endpoint")[0]["address"] == "0.0.0.0"
    finally:
        c2.stop()
