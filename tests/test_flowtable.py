"""The flow table's behaviour a user sees in flow records: lifecycle, Zeek states, timeouts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import PacketRecord
from stream_app.core.flowtable import FlowConfig, FlowTable

A, B, C = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([10, 0, 0, 3])
S = 1_000_000_000
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def pkt(t: float, src=A, dst=B, sport=40000, dport=80, flags=ACK, data=0, proto=6,
        vni=7, length=None) -> PacketRecord:
    wire = length if length is not None else 40 + data
    return PacketRecord(int(t * S), vni, None, 4, src, dst, proto, sport, dport, flags, 0, 0,
                        wire, wire, data, b"")


def rev(t: float, **kw) -> PacketRecord:
    kw.setdefault("src", B)
    kw.setdefault("dst", A)
    kw.setdefault("sport", 80)
    kw.setdefault("dport", 40000)
    return pkt(t, **kw)


class _Forgetful(set):
    """A memo that remembers nothing: every TCP segment goes through the state machine."""

    def add(self, item) -> None:
        pass


def _table_without_memo(config):
    table = FlowTable(config)
    new = table._new

    def _new(*args):
        f = new(*args)
        f.memo = _Forgetful()
        return f
    table._new = _new
    return table


def feed(packets, config=None, sweep_every=None, memo=True):
    table = FlowTable(config or FlowConfig()) if memo else _table_without_memo(config or FlowConfig())
    out = []
    for i, p in enumerate(packets):
        out += table.add(p)
        if sweep_every and i % sweep_every == 0:
            out += table.expire()
    return out + table.flush()


def handshake(t0=0.0):
    return [pkt(t0, flags=SYN), rev(t0 + 0.01, flags=SYN | ACK), pkt(t0 + 0.02, flags=ACK)]


def test_complete_connection_is_one_sf_record_with_its_last_ack():
    pkts = handshake() + [
        pkt(0.03, flags=PSH | ACK, data=100), rev(0.04, flags=PSH | ACK, data=500),
        pkt(0.05, flags=FIN | ACK), rev(0.06, flags=FIN | ACK),
        pkt(0.07, flags=ACK),  # the last ACK, after both FINs: still this flow
    ]
    [r] = feed(pkts)
    assert (r.srcaddr, r.srcport, r.dstaddr, r.dstport) == ("10.0.0.1", 40000, "10.0.0.2", 80)
    assert r.conn_state == "SF" and r.end_reason == "fin"
    assert r.history == "ShADdFf"
    assert (r.orig_pkts, r.resp_pkts, r.packets) == (5, 3, 8)
    assert r.bytes == 8 * 40 + 600 and r.orig_bytes == 5 * 40 + 100
    assert r.tcp_flags == SYN | ACK | PSH | FIN


def test_rejected_and_unanswered_connections():
    [rej] = feed([pkt(0, flags=SYN), rev(0.001, flags=RST | ACK)])
    assert rej.conn_state == "REJ" and rej.end_reason == "rst" and rej.history == "Sr"
    [s0] = feed([pkt(0, flags=SYN), pkt(1, flags=SYN), pkt(3, flags=SYN)])
    assert s0.conn_state == "S0" and s0.packets == 3 and s0.resp_pkts == 0


def test_established_and_reset_states():
    [s1] = feed(handshake() + [pkt(0.1, flags=PSH | ACK, data=10)])
    assert s1.conn_state == "S1" and s1.end_reason == "eof"
    [rsto] = feed(handshake() + [pkt(0.1, flags=RST)])
    assert rsto.conn_state == "RSTO"


def test_midstream_flow_is_oriented_by_ports_and_flagged():
    # First packet seen is the server's answer: the client is still the originator.
    [r] = feed([rev(0, flags=PSH | ACK, data=1000), pkt(0.1, flags=ACK)])
    assert (r.srcport, r.dstport) == (40000, 80)
    assert r.history.startswith("^")
    assert (r.orig_pkts, r.resp_pkts) == (1, 1)
    [h] = feed([rev(0, flags=SYN | ACK), pkt(0.01, flags=ACK)])
    assert (h.srcport, h.dstport) == (40000, 80) and h.history.startswith("^h")


def test_port_reuse_after_close_starts_a_new_flow():
    first = handshake() + [pkt(0.05, flags=FIN | ACK), rev(0.06, flags=FIN | ACK), pkt(0.07)]
    second = handshake(1.0)  # same ports, within the linger time
    recs = feed(first + second)
    assert [r.end_reason for r in recs] == ["fin", "eof"]
    assert recs[0].packets == 6 and recs[1].packets == 3
    assert recs[0].flow_id != recs[1].flow_id
    assert recs[0].community_id == recs[1].community_id


def test_idle_timeout_splits_a_flow():
    recs = feed([pkt(0, proto=17, sport=5000, dport=53), pkt(20, proto=17, sport=5000, dport=53)],
                FlowConfig(idle_timeout=15))
    assert [r.end_reason for r in recs] == ["idle", "eof"]
    assert [r.packets for r in recs] == [1, 1]


def test_answered_tcp_connections_outlive_the_short_idle_timeout():
    # An unanswered attempt ends after idle_timeout; a connection both sides spoke on waits
    # tcp_idle_timeout (an idle keep-alive connection is still one connection).
    cfg = FlowConfig(idle_timeout=15, tcp_idle_timeout=300, active_timeout=1000)
    attempts = feed([pkt(0, flags=SYN), pkt(20, flags=SYN)], cfg)
    assert [r.end_reason for r in attempts] == ["idle", "eof"]
    [conn] = feed(handshake() + [pkt(20, flags=PSH | ACK, data=5), rev(100, flags=PSH | ACK, data=5)], cfg)
    assert conn.packets == 5 and conn.end_reason == "eof"
    assert len(feed(handshake() + [pkt(400, flags=ACK)], cfg)) == 2


def test_active_timeout_reports_long_flows_without_losing_packets():
    pkts = handshake() + [pkt(1 + i, flags=ACK, data=10) for i in range(150)]
    recs = feed(pkts, FlowConfig(active_timeout=60, idle_timeout=15))
    assert [r.end_reason for r in recs] == ["active", "active", "eof"]
    assert sum(r.packets for r in recs) == len(pkts)
    assert sum(r.bytes for r in recs) == sum(p.wire_len for p in pkts)
    assert len({r.flow_id for r in recs}) == 3
    assert all(r.duration < 60 for r in recs)


def test_udp_and_icmp_pairing():
    [dns] = feed([pkt(0, proto=17, sport=5353, dport=53), rev(0.01, proto=17, sport=53, dport=5353)])
    assert dns.conn_state == "SF" and dns.srcport == 5353
    [s0] = feed([pkt(0, proto=17, sport=5353, dport=53)])
    assert s0.conn_state == "S0"
    # echo request (8/0) and reply (0/0) are one flow, as the Community ID pairs them
    ping = feed([pkt(0, proto=1, sport=8, dport=0), rev(0.01, proto=1, sport=0, dport=0)])
    assert len(ping) == 1 and ping[0].packets == 2 and ping[0].conn_state == "OTH"


def test_vni_separates_flows():
    recs = feed([pkt(0, vni=1), pkt(0.1, vni=2)])
    assert sorted(r.vni for r in recs) == [1, 2]


_flows = st.sampled_from([(A, B, 40000, 80), (A, C, 40001, 443), (C, B, 5000, 53)])
_events = st.lists(st.tuples(_flows, st.booleans(), st.sampled_from([SYN, ACK, FIN | ACK, RST, SYN | ACK]),
                             st.floats(0, 40), st.integers(0, 1400)), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(_events, st.integers(1, 7))
def test_records_do_not_depend_on_when_timeouts_are_swept(events, sweep_every):
    """In distributed mode timeouts are swept whenever a batch arrives; the records must be
    the same as when nothing is swept until the end."""
    t = 0.0
    pkts = []
    for (src, dst, sp, dp), forward, flags, gap, data in events:
        t += gap
        proto = 17 if dp == 53 else 6
        if not forward:
            src, dst, sp, dp = dst, src, dp, sp
        pkts.append(pkt(t, src=src, dst=dst, sport=sp, dport=dp, flags=flags if proto == 6 else 0,
                        data=data, proto=proto))
    cfg = FlowConfig(idle_timeout=15, tcp_idle_timeout=30, active_timeout=60, close_linger=5)
    lazy = feed(pkts, cfg)
    eager = feed(pkts, cfg, sweep_every=sweep_every)
    key = lambda r: r.flow_id  # noqa: E731
    assert sorted(lazy, key=key) == sorted(eager, key=key)
    assert sum(r.packets for r in lazy) == len(pkts)
    # Skipping segment kinds already applied (the hot path's memo) changes no record.
    assert feed(pkts, cfg, memo=False) == lazy
