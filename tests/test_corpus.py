"""Every public capture decodes without a crash, and what it holds comes out right."""

from __future__ import annotations

import gzip
import json
import struct
from collections import Counter

import pytest

from collectors.flowkey import community_id
from tests.conftest import CORPUS, NO_TIMEOUTS, corpus_files, run


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_file_reads_and_reconciles(path, tmp_path):
    res, flows = run([path], tmp_path)
    assert res.frames > 0
    # Every frame is either decoded or dropped under a named reason: nothing is lost silently.
    assert res.frames == res.decoded + res.dropped
    # Every decoded packet lands in exactly one flow record.
    assert sum(f.packets for f in flows) == res.decoded
    assert not res.problems, res.problems


def test_aws_mirrored_ssh_sessions(tmp_path):
    """Captured with AWS Traffic Mirroring itself: 4 SSH connections inside VNI 5569041."""
    res, flows = run([CORPUS / "sv__vxlan-decoder-03__vxlan.pcap"], tmp_path)
    assert res.dropped == 0
    assert {f.vni for f in flows} == {5569041}
    ssh = sorted((f for f in flows if f.protocol == 6 and 22 in (f.srcport, f.dstport)),
                 key=lambda f: f.srcport)
    assert len(ssh) == 4
    # Per direction, as tshark -z conv,tcp counts this file (client -> server, server -> client).
    expected = {37180: (13, 10), 37182: (11, 10), 37184: (11, 10), 37186: (9, 8)}
    for f in ssh:
        assert f.dstport == 22 and f.srcaddr == "18.196.145.224" and f.dstaddr == "172.31.0.238"
        assert (f.orig_pkts, f.resp_pkts) == expected[f.srcport]
        assert f.orig_pkts and f.resp_pkts
        assert f.packets == f.orig_pkts + f.resp_pkts
        assert f.mirror_source == "172.31.0.238"
        # The mirrored ENI is the SSH server: its inbound connections are ingress.
        assert f.flow_direction == "ingress"
        assert f.history.startswith("ShAD") or f.history.startswith("Sh")
    assert all(f.conn_state in ("SF", "S1", "RSTO", "RSTR") for f in ssh)


def test_vxlan_with_non_zero_reserved_bits_still_decodes(tmp_path):
    res, flows = run([CORPUS / "sv__vxlan-non-zero-reserved-fields__input.pcap"], tmp_path)
    assert res.decoded > 0 and res.drops["bad_vxlan"] == 0
    assert all(f.vni is not None for f in flows)


def test_geneve_wrapping_vxlan_truncated(tmp_path):
    """GENEVE (the Gateway Load Balancer path) around VXLAN around DNS, cut by the snap length:
    the innermost flow is found, with the inner VXLAN's VNI, and flagged truncated."""
    res, flows = run([CORPUS / "zeek__geneve-vxlan-dns-truncated.pcap"], tmp_path)
    assert flows, res.drops
    dns = [f for f in flows if 53 in (f.srcport, f.dstport)]
    assert dns and all(f.protocol == 17 for f in dns)
    assert sum(f.truncated_pkts for f in flows) > 0


def test_vxlan_encapsulated_http(tmp_path):
    res, flows = run([CORPUS / "zeek__vxlan-encapsulated-http.pcap"], tmp_path)
    http = [f for f in flows if f.dstport == 80]
    assert len(http) == 1
    f = http[0]
    assert f.vni == 1 and f.conn_state == "SF" and "F" in f.history and "f" in f.history


def test_community_id_matches_the_specification_baseline(tmp_path):
    """Every flow in the Community ID test pcaps has the baseline's ID, and every baseline tuple
    found in those pcaps belongs to a flow with that ID."""
    baseline = json.loads((CORPUS / "community-id" / "baseline_deflt.json").read_text())
    want = {b["communityid"] for b in baseline}
    got: set[str] = set()
    for pcap in sorted((CORPUS / "community-id").glob("*.pcap")):
        _, flows = run([pcap], tmp_path)
        assert flows
        for f in flows:
            assert f.community_id in want, (pcap.name, f)
            got.add(f.community_id)
    # The one baseline tuple whose pcap is not in the corpus (RSVP, protocol 46, no ports)
    # is checked through the function directly, as is every other tuple.
    import ipaddress
    for b in baseline:
        src = ipaddress.ip_address(b["saddr"]).packed
        dst = ipaddress.ip_address(b["daddr"]).packed
        assert community_id(b["proto"], src, dst, b["sport"] or 0, b["dport"] or 0) == b["communityid"], b
    assert want - got == {"1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="}  # the RSVP flow's pcap is not shipped


def _pcap(linktype: int, frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for i, fr in enumerate(frames):
        out += struct.pack("<IIII", 1_700_000_000 + i, 0, len(fr), len(fr)) + fr
    return out


def test_unsupported_link_type_is_named(tmp_path):
    p = tmp_path / "ppp.pcap"
    p.write_bytes(_pcap(9, [b"\xff\x03\x00\x21" + b"\x45" + b"\x00" * 19] * 3))
    res, flows = run([p], tmp_path)
    assert res.frames == 3 and res.drops["unsupported_linktype"] == 3 and not flows
    assert any("PPP (link type 9) is not supported" in m for m in res.problems)


def test_gzip_and_cut_short_file(tmp_path):
    raw = (CORPUS / "sv__vxlan-decoder-03__vxlan.pcap").read_bytes()
    gz = tmp_path / "x.pcap.gz"
    gz.write_bytes(gzip.compress(raw))
    res_gz, flows_gz = run([gz], tmp_path)
    res, flows = run([CORPUS / "sv__vxlan-decoder-03__vxlan.pcap"], tmp_path)
    assert [f.flow_id for f in flows_gz] == [f.flow_id for f in flows]
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(raw[:-10])
    res_cut, _ = run([cut], tmp_path)
    assert res_cut.frames == res.frames - 1
    assert any("ends inside a record" in m for m in res_cut.problems)


def test_pcapng_matches_tshark_frame_count(tmp_path, tshark):
    import subprocess
    p = CORPUS / "zeek-http" / "cooper-grill-dvwa.pcapng"
    res, _ = run([p], tmp_path)
    n = subprocess.run([tshark, "-r", str(p), "-T", "fields", "-e", "frame.number"],
                       capture_output=True, text=True, check=True).stdout.split()
    assert res.frames == len(n)


def test_plain_capture_has_no_vni(tmp_path):
    res, flows = run([CORPUS / "zeek__wikipedia.pcap"], tmp_path, NO_TIMEOUTS)
    assert flows and all(f.vni is None and f.mirror_source is None for f in flows)
    assert Counter(f.type for f in flows)["IPv4"] > 0


def test_community_id_agrees_with_the_reference_package():
    """Our hand-written Community ID (for speed) against the communityid package."""
    import random

    import communityid

    ref = communityid.CommunityID(seed=0)
    rng = random.Random(7)
    for _ in range(3000):
        v6 = rng.random() < 0.3
        n = 16 if v6 else 4
        src = bytes(rng.getrandbits(8) for _ in range(n))
        dst = src if rng.random() < 0.05 else bytes(rng.getrandbits(8) for _ in range(n))
        proto = rng.choice([6, 17, 132, 1, 58, 46, 47])
        if proto in (1, 58):
            sport, dport = rng.choice([0, 3, 8, 11, 128, 129, 133, 134, 135, 136, 200]), rng.randrange(16)
        else:
            sport, dport = rng.randrange(65536), rng.randrange(65536)
        if proto in communityid.PORT_PROTOS:
            tpl = communityid.FlowTuple(proto, src, dst, sport, dport)
        else:
            tpl = communityid.FlowTuple(proto, src, dst)
        assert community_id(proto, src, dst, sport, dport) == ref.calc(tpl), (proto, src, dst, sport, dport)
