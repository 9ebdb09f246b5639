"""TCP health against tshark's tcp.analysis.* (tests/tcp_health_tshark.py has the mapping):
every flow of every corpus capture, and the crafted conversations of test_tcp_health.py."""

from __future__ import annotations

from collections import Counter

from tests.conftest import NO_TIMEOUTS, corpus_files, run
from tests.craft import TcpConversation, write_pcap
from tests.tcp_health_tshark import compare


def _compare_all(paths, tmp_path):
    total, details = Counter(), []
    for p in paths:
        _, flows = run([p], tmp_path, NO_TIMEOUTS)
        c, d = compare(p, flows)
        total.update(c)
        details += d
    return total, details


def test_every_corpus_flow_agrees_with_tshark_or_differs_by_a_listed_definition(tmp_path, tshark):
    paths = [p for p in corpus_files() if p.suffix in (".pcap", ".pcapng", ".gz")]
    total, details = _compare_all(paths, tmp_path)
    assert not details, "\n".join(details[:20])
    # What the corpus holds (tshark's counts, mapped): the comparison is not vacuous, and a
    # change in either side's classification shows here.
    assert dict(total) == {
        "frames skipped: L2TP": 10,  # TCP inside L2TP (dpkt__nb6-http.pcap): not decoded by us
        "ooo equal": 552, "retx equal": 552, "zw equal": 552,  # flow directions compared
        "ooo events": 26, "retx events": 278, "zw events": 57,
        "retx explained: filled a hole tshark reported": 2,
        "retx explained: tshark out-of-order, no hole open": 58,
        "retx explained: first copy, acknowledged before the mirror delivered it": 0,
        "rtt equal": 276,
        "rtt explained: SYN resent, tshark times the first": 7,
        "rtt explained: tshark timed no handshake ACK": 16,
    }


def test_crafted_losses_agree_with_tshark(tmp_path, tshark):
    c = TcpConversation().handshake()
    segs = [c.server(bytes([48 + i]) * 300) for i in range(6)]
    d1 = c.client(b"q" * 50)
    z = c.ack(True, win=0)
    c.close()
    rest = list(range(z + 1, len(c.segments)))
    order = [0, 1, 2, segs[0], segs[2], segs[1], segs[3], segs[3], segs[5], d1, d1, z, z, *rest]
    pcap = write_pcap(tmp_path / "losses.pcap", c.frames(order=order, step=0.01))
    total, details = _compare_all([pcap], tmp_path)
    assert not details, "\n".join(details)
    assert total["ooo events"] == 2 and total["zw events"] == 2
    assert total["retx events"] == 2  # segs[3] and d1 resent; segs[1] filled its hole
    assert total["rtt equal"] == 1
