"""TCP health on crafted captures: each conversation's segments are made with true sequence
numbers (tests/craft.py) and delivered in a chosen order, so the expected counts follow from
the definitions in stream_app/core/tcphealth.py (docs/results.md), not from our output."""

from __future__ import annotations

from collections import Counter

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.decode import Decoder
from schemas.records import PacketRecord
from stream_app.core.flowtable import FlowConfig, FlowTable
from tests.conftest import NO_TIMEOUTS, run
from tests.craft import RST, TcpConversation, ethernet, ip4, ipv4_packet, udp_frame, write_pcap

HEALTH = ("orig_retrans_pkts", "orig_retrans_bytes", "resp_retrans_pkts", "resp_retrans_bytes",
          "orig_ooo_pkts", "resp_ooo_pkts", "orig_zero_windows", "resp_zero_windows",
          "missed_bytes")


def flows_of(tmp_path, frames, config: FlowConfig = NO_TIMEOUTS, fast: bool = True):
    pcap = write_pcap(tmp_path / "crafted.pcap", frames)
    _, flows = run([pcap], tmp_path, config, fast=fast)
    return flows


def health(rec) -> dict:
    return {k: getattr(rec, k) for k in HEALTH}


def counts(**nonzero) -> dict:
    out = dict.fromkeys(HEALTH, 0)
    out.update(nonzero)
    return out


def at(conv, times_and_idx):
    return [(t, conv.segments[i][1]) for t, i in times_and_idx]


@pytest.mark.parametrize("fast", [True, False], ids=["c-decoder", "py-decoder"])
def test_a_clean_connection_has_its_handshake_rtts_and_zero_counts(tmp_path, fast):
    c = TcpConversation().handshake()
    q = c.client(b"x" * 300)
    r = c.server(b"y" * 1000)
    c.close()
    # SYN at 1.000, SYN-ACK 0.004 s later, the ACK 0.0015 s after that.
    times = [1.0, 1.004, 1.0055, 1.010, 1.020, 1.030, 1.031, 1.032]
    frames = at(c, zip(times, range(len(c.segments))))
    frames.append((1.5, udp_frame("10.0.0.1", "10.0.0.3", 5000, 53, b"q")))
    flows = flows_of(tmp_path, frames, fast=fast)
    tcp = next(f for f in flows if f.protocol == 6)
    udp = next(f for f in flows if f.protocol == 17)
    assert tcp.handshake_rtt_resp == pytest.approx(0.004, abs=1e-6)
    assert tcp.handshake_rtt_orig == pytest.approx(0.0015, abs=1e-6)
    assert health(tcp) == counts()
    assert (q, r) == (3, 4)
    # Other protocols: every TCP health field null.
    assert udp.handshake_rtt_resp is None and udp.handshake_rtt_orig is None
    assert all(getattr(udp, k) is None for k in HEALTH)


def test_a_resent_syn_times_the_handshake_from_the_last_syn(tmp_path):
    c = TcpConversation()
    s = c.syn()
    sa = c.syn_ack()
    a = c.ack(True)
    c.client(b"GET / HTTP/1.0\r\n\r\n")
    # The first SYN went unanswered; the resend 1 s later got the SYN-ACK 2 ms after it.
    flows = flows_of(tmp_path, at(c, [(1.0, s), (2.0, s), (2.002, sa), (2.0025, a), (2.01, 3)]))
    (f,) = flows
    assert f.handshake_rtt_resp == pytest.approx(0.002, abs=1e-6)
    assert f.handshake_rtt_orig == pytest.approx(0.0005, abs=1e-6)
    assert health(f) == counts()  # a resent SYN carries no data: no retransmitted bytes


def test_no_handshake_seen_means_null_rtts(tmp_path):
    c = TcpConversation().handshake()
    c.client(b"a" * 10)
    c.server(b"b" * 10)
    (f,) = flows_of(tmp_path, c.frames(order=[3, 4]))
    assert f.handshake_rtt_resp is None and f.handshake_rtt_orig is None
    assert health(f) == counts()


def test_resends_reordering_and_holes_are_told_apart(tmp_path):
    c = TcpConversation().handshake()
    d1 = c.client(b"a" * 100)
    d2 = c.client(b"b" * 200)
    s1 = c.server(b"1" * 500)
    s2 = c.server(b"2" * 700)
    s3 = c.server(b"3" * 900)
    s4 = c.server(b"4" * 400)
    s5 = c.server(b"5" * 300)
    c.close()
    fin = list(range(s5 + 1, len(c.segments)))
    order = [0, 1, 2,
             d1, d2, d1,          # d1 resent: 1 packet, 100 bytes
             s1, s3, s2,          # s2 late (delivered after s3): out of order, filled, not resent
             s2,                  # ... and s2 again: now a resend (700 bytes)
             s5,                  # s4 never delivered: a hole of 400 bytes
             *fin]
    (f,) = flows_of(tmp_path, c.frames(order=order))
    assert health(f) == counts(orig_retrans_pkts=1, orig_retrans_bytes=100,
                               resp_retrans_pkts=1, resp_retrans_bytes=700,
                               resp_ooo_pkts=2, missed_bytes=400)


def test_a_repacketised_resend_counts_its_old_bytes_only(tmp_path):
    c = TcpConversation().handshake()
    c.client(b"a" * 100)
    c.client(b"b" * 100)
    # What the sender resent: both segments' bytes and 50 new ones in one segment, from the
    # first data byte (ISN 1000 + 1 for the SYN).
    seg = dpkt.tcp.TCP(sport=40000, dport=80, seq=1001, ack=50001, flags=0x18, win=65535,
                       data=b"a" * 100 + b"b" * 100 + b"c" * 50)
    frame = ethernet(ipv4_packet(ip4("10.0.0.1"), ip4("10.0.0.2"), 6, seg))
    frames = c.frames(order=[0, 1, 2, 3, 4]) + [(2.0, frame)]
    (f,) = flows_of(tmp_path, frames)
    assert health(f) == counts(orig_retrans_pkts=1, orig_retrans_bytes=200)


def test_zero_windows_are_counted_per_segment_and_not_on_rst(tmp_path):
    c = TcpConversation().handshake()
    c.server(b"x" * 1000)
    z1 = c.ack(True, win=0)
    z2 = c.ack(True, win=0)
    c.ack(True)
    zs = c.ack(False, win=0)
    rst = dpkt.tcp.TCP(sport=40000, dport=80, seq=c.cseq, ack=0, flags=RST, win=0)
    rst_frame = ethernet(ipv4_packet(ip4("10.0.0.1"), ip4("10.0.0.2"), 6, rst))
    assert (z1, z2, zs) == (4, 5, 7)
    frames = c.frames() + [(5.0, rst_frame)]
    (f,) = flows_of(tmp_path, frames)
    assert health(f) == counts(orig_zero_windows=2, resp_zero_windows=1)


def test_bytes_acknowledged_but_never_seen_are_missed(tmp_path):
    c = TcpConversation().handshake()
    c.server(b"1" * 500)
    tail = c.server(b"2" * 800)  # the mirror never copies it ...
    c.ack(True)                  # ... but the client acknowledges it
    (f,) = flows_of(tmp_path, c.frames(drop={tail}))
    assert health(f) == counts(missed_bytes=800)


def test_a_keepalive_is_not_a_retransmission(tmp_path):
    c = TcpConversation().handshake()
    c.client(b"a" * 10)
    ka = dpkt.tcp.TCP(sport=40000, dport=80, seq=c.cseq - 1, ack=c.sseq, flags=0x10,
                      win=65535, data=b"a")
    frame = ethernet(ipv4_packet(ip4("10.0.0.1"), ip4("10.0.0.2"), 6, ka))
    (f,) = flows_of(tmp_path, c.frames() + [(3.0, frame), (4.0, frame)])
    assert health(f) == counts()


def test_sequence_numbers_wrapping_past_zero(tmp_path):
    # The client's data crosses 2**32 at its third segment; the server's ISN is just below.
    c = TcpConversation(cisn=2**32 - 250, sisn=2**32 - 1)
    c.handshake()
    segs = [c.client(bytes([65 + i]) * 100) for i in range(5)]
    assert c.cseq < 1000  # wrapped
    srv = [c.server(b"s" * 100) for _ in range(2)]
    c.close()
    order = [0, 1, 2, segs[0], segs[1], segs[3], segs[2], segs[4], segs[2], srv[1], srv[0],
             *range(srv[1] + 1, len(c.segments))]
    (f,) = flows_of(tmp_path, c.frames(order=order))
    # segs[2] late (ooo: segs[3] ahead of it), then resent; srv[0] late too.
    assert health(f) == counts(orig_ooo_pkts=1, orig_retrans_pkts=1, orig_retrans_bytes=100,
                               resp_ooo_pkts=1)


def test_counters_are_per_record_and_rtts_on_the_handshakes_record(tmp_path):
    c = TcpConversation().handshake()
    d1 = c.client(b"a" * 100)
    d2 = c.client(b"b" * 100)
    c.close()
    times = [(1.0, 0), (1.001, 1), (1.002, 2), (1.01, d1), (1.02, d1),   # resent in record 1
             (70.0, d2), (70.5, d2), (70.6, d2),                            # twice in record 2
             *[(71.0 + k, i) for k, i in enumerate(range(d2 + 1, len(c.segments)))]]
    cfg = FlowConfig(idle_timeout=1e6, tcp_idle_timeout=1e6, active_timeout=60.0,
                     close_linger=1e6)
    first, second = flows_of(tmp_path, at(c, times), config=cfg)
    assert first.end_reason == "active"
    assert first.handshake_rtt_resp == pytest.approx(0.001, abs=1e-6)
    assert second.handshake_rtt_resp is None and second.handshake_rtt_orig is None
    assert health(first) == counts(orig_retrans_pkts=1, orig_retrans_bytes=100)
    assert health(second) == counts(orig_retrans_pkts=2, orig_retrans_bytes=200)


def test_both_decoders_read_the_tcp_window():
    from collectors import _fastdecode as fd
    from collectors.decode import PayloadPolicy
    from schemas.records import PacketRecord

    tcp = dpkt.tcp.TCP(sport=1, dport=2, seq=5, ack=6, flags=0x10, win=0x1234)
    frame = ethernet(ipv4_packet(ip4("10.0.0.1"), ip4("10.0.0.2"), 6, tcp))
    ref = Decoder().decode(frame, 1, 7)
    pol = PayloadPolicy()
    fast = fd.decode_frame(fd.Config(PacketRecord, pol.max_bytes, pol.port_bitmap(), False,
                                     1000, 1), frame, 7)
    assert ref.window == fast.window == 0x1234
    udp = Decoder().decode(udp_frame("10.0.0.1", "10.0.0.2", 1, 2, b"x"), 1, 7)
    assert udp.window == 0


# -- properties over arbitrary segment orders ------------------------------------------------

_A, _B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def _seg(t, seq, plen, flags=0x10, orig=True, window=1000, ack=0):
    src, dst, sp, dp = (_A, _B, 40000, 80) if orig else (_B, _A, 80, 40000)
    return PacketRecord(t, None, None, 4, src, dst, 6, sp, dp, flags, seq & 0xFFFFFFFF, ack,
                        40 + plen, 40 + plen, plen, b"", window=window)


def _one_flow(pkts):
    table = FlowTable(NO_TIMEOUTS)
    out = table.add_batch(pkts) + table.flush()
    assert table.stats["packet_errors"] == 0, table.errors
    (rec,) = out
    return rec


@settings(max_examples=150, deadline=None)
@given(isn=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(2, 1460), min_size=1, max_size=12),
       dup=st.data())
def test_in_order_data_counts_nothing_and_one_resend_counts_exactly(isn, sizes, dup):
    pkts, seq, t = [_seg(1, isn, 0, 0x02)], (isn + 1) & 0xFFFFFFFF, 2
    starts = []
    for n in sizes:
        starts.append((seq, n))
        pkts.append(_seg(t, seq, n, 0x18))
        seq, t = (seq + n) & 0xFFFFFFFF, t + 1
    clean = _one_flow(pkts)
    assert health(clean) == counts()
    i = dup.draw(st.integers(0, len(sizes) - 1))
    s, n = starts[i]
    again = _one_flow(pkts + [_seg(t, s, n, 0x18)])
    assert health(again) == counts(orig_retrans_pkts=1, orig_retrans_bytes=n)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 3000), st.sampled_from(
    [0x10, 0x18, 0x02, 0x12, 0x11, 0x04, 0x14]), st.booleans(), st.integers(0, 3)),
    min_size=1, max_size=40))
def test_arbitrary_segments_never_raise_and_counts_stay_sane(segs):
    pkts = [_seg(k + 1, seq, plen, fl, orig, window=w - 1, ack=seq ^ 0x5A5A)
            for k, (seq, plen, fl, orig, w) in enumerate(segs)]
    table = FlowTable(NO_TIMEOUTS)
    recs = table.add_batch(pkts) + table.flush()  # a SYN after a RST starts a new record
    assert table.stats["packet_errors"] == 0, table.errors
    total = Counter()
    for rec in recs:
        h = health(rec)
        assert all(v >= 0 for v in h.values()), h
        assert h["orig_retrans_pkts"] + h["orig_ooo_pkts"] <= rec.orig_pkts
        assert h["resp_retrans_pkts"] + h["resp_ooo_pkts"] <= rec.resp_pkts
        a_orig = rec.srcaddr == "10.0.0.1"  # a SYN-ACK first makes the other side originate
        total["A"] += h["orig_retrans_bytes" if a_orig else "resp_retrans_bytes"]
        total["B"] += h["resp_retrans_bytes" if a_orig else "orig_retrans_bytes"]
        for rtt in (rec.handshake_rtt_resp, rec.handshake_rtt_orig):
            assert rtt is None or rtt >= 0
    assert total["A"] <= sum(p for _, p, _, o, _ in segs if o)
    assert total["B"] <= sum(p for _, p, _, o, _ in segs if not o)
