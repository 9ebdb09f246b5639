"""The collector's optional local filter, with AWS Traffic Mirror filter semantics.

A packet is matched against the rules of its direction (ingress: entering the mirrored ENI;
egress: leaving it) in ascending rule_number order; the first rule whose protocol, source and
destination CIDRs and port ranges all match decides (accept or reject); when no rule matches
the packet is rejected. ``protocol`` None matches every protocol; a port range matches only
TCP and UDP packets (AWS allows ranges only on TCP/UDP rules). The rule format is the one the
Terraform mirror-filter module takes (collectors.config.FilterRule).

Direction comes from PacketRecord.direction (egress when the inner source is the mirror
source, ingress when the inner destination is). When it is not known (None: the mirrored ENI
sent or received the packet on a secondary address, or the record did not come through a
tunnel) the packet is accepted if the rules of EITHER direction accept it: AWS mirrored it,
so it passed AWS's filter in one of the two directions, and the local filter must not drop a
packet the same rules would keep.

An empty rule list means "no local filter" (the Terraform module's default): see
``MirrorFilter.from_rules``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from collectors.config import FilterRule

_PORT_PROTOS = (6, 17)


@dataclass(frozen=True, slots=True)
class _Rule:
    number: int
    accept: bool
    proto: int | None
    src_v: int  # IP version of the CIDR
    src_net: int
    src_mask: int
    dst_v: int
    dst_net: int
    dst_mask: int
    sport: tuple[int, int] | None
    dport: tuple[int, int] | None

    def matches(self, proto: int, src: int, src_v: int, dst: int, sport: int, dport: int) -> bool:
        if self.proto is not None and proto != self.proto:
            return False
        if src_v != self.src_v or src_v != self.dst_v:
            return False
        if src & self.src_mask != self.src_net or dst & self.dst_mask != self.dst_net:
            return False
        if self.sport is not None or self.dport is not None:
            if proto not in _PORT_PROTOS:
                return False
            if self.sport is not None and not self.sport[0] <= sport <= self.sport[1]:
                return False
            if self.dport is not None and not self.dport[0] <= dport <= self.dport[1]:
                return False
        return True


def _net(cidr: str) -> tuple[int, int, int]:
    n = ipaddress.ip_network(cidr, strict=False)
    bits = n.max_prefixlen
    mask = ((1 << bits) - 1) ^ ((1 << (bits - n.prefixlen)) - 1)
    return n.version, int(n.network_address), mask


def _compile(r: FilterRule) -> _Rule:
    sv, sn, sm = _net(r.source_cidr)
    dv, dn, dm = _net(r.destination_cidr)
    sp = (r.source_port_range.from_port, r.source_port_range.to_port) if r.source_port_range else None
    dp = (r.destination_port_range.from_port, r.destination_port_range.to_port) \
        if r.destination_port_range else None
    return _Rule(r.rule_number, r.action == "accept", r.protocol, sv, sn, sm, dv, dn, dm, sp, dp)


class MirrorFilter:
    def __init__(self, rules: list[FilterRule]):
        self.ingress = sorted((_compile(r) for r in rules if r.direction == "ingress"),
                              key=lambda r: r.number)
        self.egress = sorted((_compile(r) for r in rules if r.direction == "egress"),
                             key=lambda r: r.number)

    @classmethod
    def from_rules(cls, rules: list[FilterRule]) -> MirrorFilter | None:
        """None (no filtering) for an empty rule list."""
        return cls(rules) if rules else None

    @staticmethod
    def _first_match(rules: list[_Rule], proto, src, v, dst, sport, dport) -> bool:
        for r in rules:
            if r.matches(proto, src, v, dst, sport, dport):
                return r.accept
        return False  # no match rejects

    def accepts_tuple(self, direction: str | None, proto: int, src: bytes, dst: bytes,
                      sport: int, dport: int) -> bool:
        s = int.from_bytes(src, "big")
        d = int.from_bytes(dst, "big")
        v = 4 if len(src) == 4 else 6
        if direction == "ingress":
            return self._first_match(self.ingress, proto, s, v, d, sport, dport)
        if direction == "egress":
            return self._first_match(self.egress, proto, s, v, d, sport, dport)
        return (self._first_match(self.ingress, proto, s, v, d, sport, dport)
                or self._first_match(self.egress, proto, s, v, d, sport, dport))

    def accepts(self, r) -> bool:
        """For a PacketRecord. ICMP type/code sit in sport/dport but never match a port range."""
        return self.accepts_tuple(r.direction, r.proto, r.src, r.dst, r.sport, r.dport)
