"""Flow identity: the symmetric key both directions of a flow share, and its Community ID.

Both directions of a conversation must meet in one partition and one flow state, though an
NLB may deliver them to different collectors: the key orders the two endpoints canonically.
ICMP messages that have a counterpart (echo request/reply ...) are paired the way the Community
ID specification pairs them, so a ping and its reply are one flow.
"""

from __future__ import annotations

import hashlib
import socket
import struct

import communityid
from communityid import icmp as _cid_icmp
from communityid import icmp6 as _cid_icmp6

from schemas.records import PacketRecord

_ICMP_PAIRS = {1: _cid_icmp.TYPE_MAPPER, 58: _cid_icmp6.TYPE_MAPPER}
_NO_VNI = 0xFFFFFFFF
_CID = communityid.CommunityID(seed=0)
_PKEY = struct.Struct("!IB")

FlowKey = tuple  # (vni, proto, addr_a, port_a, addr_b, port_b)


def endpoints(r: PacketRecord) -> tuple[int, int, bool]:
    """The ports a flow is keyed by, and whether the pair is one-way (not to be ordered).

    ICMP types with a counterpart become (type, counterpart type); other ICMP messages are
    one-way, keyed (type, code), as the Community ID specification does."""
    pairs = _ICMP_PAIRS.get(r.proto)
    if pairs is None:
        return r.sport, r.dport, False
    other = pairs.get(r.sport)
    if other is None:
        return r.sport, r.dport, True
    return r.sport, other, False


def flow_key(r: PacketRecord) -> tuple[FlowKey, bool]:
    """(key, forward): the canonical key, and whether r's source is the key's first endpoint."""
    sport, dport, one_way = endpoints(r)
    if one_way or (r.src, sport) <= (r.dst, dport):
        return (r.vni, r.proto, r.src, sport, r.dst, dport), True
    return (r.vni, r.proto, r.dst, dport, r.src, sport), False


def partition_key(key: FlowKey) -> bytes:
    """Stable bytes for a flow key (Kafka hashes them to a partition): the same in every
    process and on every host, unlike Python's hash()."""
    vni, proto, a, pa, b, pb = key
    return _PKEY.pack(_NO_VNI if vni is None else vni, proto) + a + pa.to_bytes(2, "big") + b + pb.to_bytes(2, "big")


def community_id(proto: int, src: bytes, dst: bytes, sport: int, dport: int) -> str:
    """Community ID v1, seed 0, of a flow given as its originator -> responder tuple
    (for ICMP: type and code in place of ports)."""
    if proto in communityid.PORT_PROTOS:  # TCP, UDP, SCTP, ICMP, ICMPv6
        tpl = communityid.FlowTuple(proto, src, dst, sport, dport)
    else:
        tpl = communityid.FlowTuple(proto, src, dst)
    return _CID.calc(tpl)


def flow_id(cid: str, vni: int | None, first_ns: int) -> str:
    """Deterministic id of one flow record: the same packets always give the same id."""
    h = hashlib.blake2b(f"{cid}|{vni}|{first_ns}".encode(), digest_size=16)
    return h.hexdigest()


def ip_text(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)
