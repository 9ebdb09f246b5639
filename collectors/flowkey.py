"""Flow identity: the symmetric key both directions of a flow share, and its Community ID.

Both directions of a conversation must meet in one partition and one flow state, though an
NLB may deliver them to different collectors: the key orders the two endpoints canonically.
ICMP messages that have a counterpart (echo request/reply ...) are paired the way the Community
ID specification pairs them, so a ping and its reply are one flow.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct

from communityid import icmp as _cid_icmp
from communityid import icmp6 as _cid_icmp6

from schemas.records import PacketRecord

_ICMP_PAIRS = {1: _cid_icmp.TYPE_MAPPER, 58: _cid_icmp6.TYPE_MAPPER}
_NO_VNI = 0xFFFFFFFF
_PKEY = struct.Struct("!IB")
_SEED = struct.Struct("!H")
_PROTO_PAD = struct.Struct("!BB")
_PORTS = struct.Struct("!HH")
_PORT_PROTOS = frozenset((1, 6, 17, 58, 132))  # TCP, UDP, SCTP, ICMP, ICMPv6

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


def community_id(proto: int, src: bytes, dst: bytes, sport: int, dport: int, seed: int = 0) -> str:
    """Community ID v1 of a flow given as its originator -> responder tuple (for ICMP: type
    and code in place of ports).

    Written out from the specification rather than through the communityid package, whose
    input validation costs about 100 µs a call (most of a flow record's cost); the tests hold
    this to the specification's baseline and to the package on random tuples."""
    one_way = False
    if proto in _ICMP_PAIRS:
        other = _ICMP_PAIRS[proto].get(sport)
        if other is None:
            one_way = True
        else:
            dport = other
    if not one_way and (dst < src or (src == dst and dport < sport)):
        src, dst, sport, dport = dst, src, dport, sport
    data = _SEED.pack(seed) + src + dst + _PROTO_PAD.pack(proto, 0)
    if proto in _PORT_PROTOS:
        data += _PORTS.pack(sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def flow_id(cid: str, vni: int | None, first_ns: int) -> str:
    """Deterministic id of one flow record: the same packets always give the same id."""
    h = hashlib.blake2b(f"{cid}|{vni}|{first_ns}".encode(), digest_size=16)
    return h.hexdigest()


def ip_text(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)
