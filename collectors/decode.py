"""Reference decoder: one captured frame -> one PacketRecord of the innermost IP packet.

Layers, outermost first: link (Ethernet II or IEEE 802.3 with LLC/SNAP, 802.1Q/802.1ad/QinQ
tags, PPPoE, an MPLS label stack; raw IP, BSD null and loopback, Linux cooked v1/v2) ->
IPv4/IPv6 -> UDP, and while the UDP port is a tunnel's
(VXLAN 4789, GENEVE 6081) the tunnel's payload is decoded again, up to MAX_ENCAP levels. The
innermost IP packet becomes the record; the innermost tunnel gives the VNI and mirror source.

Malformed or cut input never raises: a frame that cannot give a flow is counted in
``Decoder.drops`` under a reason and returns None; a frame cut after its transport ports
decodes as far as its bytes go and is flagged ``truncated``.

This module is the specification. collectors/_fastdecode.c implements its common case in C
and must return equal records (tests/test_fastdecode_equivalence.py fuzzes the two against
each other); everything the C path declines comes here.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

from schemas.records import PacketRecord

# pcap/pcapng link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
# DLT_RAW's platform-specific values that appear in pcap files in place of 101.
LINKTYPE_RAW_ALIASES = (12, 14)

SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "BSD null/loopback",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    12: "raw IP",
    14: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked v1",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2",
}

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
ETH_PPPOE_SESSION = 0x8864
ETH_MPLS = (0x8847, 0x8848)  # unicast, multicast (RFC 3032)
ETH_MAX_LENGTH = 1500  # an EtherType field at most this is an IEEE 802.3 length: LLC follows
_SNAP_OUIS = (b"\x00\x00\x00", b"\x00\x00\xf8")  # RFC 1042 encapsulated EtherType; 802.1H
MAX_MPLS_LABELS = 8
_PPP_TO_ETHERTYPE = {0x0021: ETH_IPV4, 0x0057: ETH_IPV6, 0x0281: 0x8847}
GENEVE_PROTO_ETHERNET = 0x6558

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMP6 = 58
PROTO_SCTP = 132

VXLAN_PORT = 4789
GENEVE_PORT = 6081
MAX_ENCAP = 4
MAX_VLAN_TAGS = 4

# BSD null/loopback address families that mean IPv6 (they differ per OS).
_NULL_AF_INET6 = (10, 24, 28, 30)
_IPV6_EXT_HEADERS = frozenset((0, 43, 60, 135, 139, 140, 253, 254))
_IPV6_FRAGMENT = 44
_IPV6_AH = 51

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_IPV4 = struct.Struct("!BxHxxHxB2x4s4s")  # ver/ihl, total len, flags/frag off, proto, src, dst
_IPV6 = struct.Struct("!4xHBx16s16s")  # payload len, next header, src, dst
_TCP = struct.Struct("!HHIIBB")  # ports, seq, ack, data offset, flags
_WIN = struct.Struct("!H")  # the window, after the flags
_PORTS = struct.Struct("!HH")

# Every reason a frame can be dropped, so that counters exist (as zero) from the start and a
# summary or metric can list them all.
DROP_REASONS = (
    "unsupported_linktype",
    "short_link_header",
    "non_ip",
    "bad_ip_header",
    "truncated_ip_header",
    "truncated_transport_header",
    "bad_vxlan",
    "bad_geneve",
    "too_many_encapsulations",
    "unsupported_mpls_payload",
)


@dataclass(slots=True)
class PayloadPolicy:
    """How much transport payload a record keeps: up to ``max_bytes``, and only for packets
    whose source or destination port is in ``ports`` (None: every port). Bodies are never
    needed for flow records; HTTP needs them on its ports."""

    max_bytes: int = 0
    ports: frozenset[int] | None = None

    def __post_init__(self) -> None:
        if self.max_bytes < 0:
            raise ValueError(f"payload max_bytes must be >= 0, not {self.max_bytes}")
        if self.ports is not None:
            bad = [p for p in self.ports if not 0 <= p <= 65535]
            if bad:
                raise ValueError(f"payload ports must be 0-65535, not {sorted(bad)[:5]}")
            self.ports = frozenset(self.ports)

    def port_bitmap(self) -> bytes:
        """The policy as a 65536-bit map, the form the C fast path reads."""
        if self.ports is None:
            return b"\xff" * 8192
        bits = bytearray(8192)
        for p in self.ports:
            bits[p >> 3] |= 1 << (p & 7)
        return bytes(bits)


@dataclass
class Decoder:
    """Stateless apart from its counters; one per thread of decoding."""

    payload: PayloadPolicy = field(default_factory=PayloadPolicy)
    vxlan_ports: frozenset[int] = frozenset((VXLAN_PORT,))
    geneve_ports: frozenset[int] = frozenset((GENEVE_PORT,))
    drops: Counter = field(default_factory=lambda: Counter({r: 0 for r in DROP_REASONS}))
    decoded: int = 0

    # -- link layer -------------------------------------------------------------------------
    def decode(self, frame: bytes, linktype: int, ts_ns: int) -> PacketRecord | None:
        """Decode one captured frame; None (and a counted drop) when it holds no flow."""
        n = len(frame)
        if linktype == LINKTYPE_ETHERNET:
            return self._ethernet(frame, 0, n, ts_ns, None, None, 0)
        if linktype == LINKTYPE_RAW or linktype in LINKTYPE_RAW_ALIASES:
            if n < 1:
                return self._dropped("short_link_header")
            ver = frame[0] >> 4
            et = ETH_IPV4 if ver == 4 else ETH_IPV6 if ver == 6 else 0
            return self._network(frame, 0, n, et, ts_ns, None, None, 0)
        if linktype == LINKTYPE_IPV4:
            return self._network(frame, 0, n, ETH_IPV4, ts_ns, None, None, 0)
        if linktype == LINKTYPE_IPV6:
            return self._network(frame, 0, n, ETH_IPV6, ts_ns, None, None, 0)
        if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            if n < 4:
                return self._dropped("short_link_header")
            # NULL stores the family in the capturing host's byte order, LOOP in network order;
            # families are small numbers, so a huge value means the other byte order.
            fam = _U32.unpack_from(frame, 0)[0]
            if linktype == LINKTYPE_NULL and fam > 0xFFFF:
                fam = int.from_bytes(frame[:4], "little")
            et = ETH_IPV4 if fam == 2 else ETH_IPV6 if fam in _NULL_AF_INET6 else 0
            return self._network(frame, 4, n, et, ts_ns, None, None, 0)
        if linktype == LINKTYPE_LINUX_SLL:
            if n < 16:
                return self._dropped("short_link_header")
            return self._network(frame, 16, n, _U16.unpack_from(frame, 14)[0], ts_ns, None, None, 0)
        if linktype == LINKTYPE_LINUX_SLL2:
            if n < 20:
                return self._dropped("short_link_header")
            return self._network(frame, 20, n, _U16.unpack_from(frame, 0)[0], ts_ns, None, None, 0)
        return self._dropped("unsupported_linktype")

    def decode_vxlan(self, data: bytes, outer_src: bytes, ts_ns: int) -> PacketRecord | None:
        """Decode a VXLAN datagram's UDP payload as a collector's socket receives it."""
        return self._tunnel(data, 0, len(data), VXLAN_PORT, outer_src, ts_ns, 0, vxlan=True)

    def _dropped(self, reason: str) -> None:
        self.drops[reason] += 1
        return None

    def _ethernet(self, b, off, end, ts_ns, vni, mirror_src, depth):
        if end - off < 14:
            return self._dropped("short_link_header")
        et = _U16.unpack_from(b, off + 12)[0]
        off += 14
        tags = 0
        while et in ETH_VLAN_TAGS:
            tags += 1
            if end - off < 4 or tags > MAX_VLAN_TAGS:
                return self._dropped("short_link_header")
            et = _U16.unpack_from(b, off + 2)[0]
            off += 4
        if et <= ETH_MAX_LENGTH:
            # IEEE 802.3: a length, then an 802.2 LLC header. IP rides in it only behind SNAP
            # (DSAP = SSAP = 0xAA, UI control 0x03, then an OUI and an EtherType: RFC 1042).
            # Other LLC frames (spanning tree, NetBIOS, IPX) carry no IP: non_ip.
            if end - off < 8 or b[off] != 0xAA or b[off + 1] != 0xAA or b[off + 2] != 0x03 \
                    or bytes(b[off + 3:off + 6]) not in _SNAP_OUIS:
                return self._dropped("non_ip")
            et = _U16.unpack_from(b, off + 6)[0]
            off += 8
            while et in ETH_VLAN_TAGS:  # 802.1Q inside SNAP (rare, but legal)
                tags += 1
                if end - off < 4 or tags > MAX_VLAN_TAGS:
                    return self._dropped("short_link_header")
                et = _U16.unpack_from(b, off + 2)[0]
                off += 4
        if et == ETH_PPPOE_SESSION:
            # PPPoE session header (6 bytes), then the 2-byte PPP protocol.
            if end - off < 8:
                return self._dropped("short_link_header")
            et = _PPP_TO_ETHERTYPE.get(_U16.unpack_from(b, off + 6)[0], 0)
            off += 8
        return self._network(b, off, end, et, ts_ns, vni, mirror_src, depth)

    def _mpls(self, b, off, end, ts_ns, vni, mirror_src, depth):
        """An MPLS label stack (RFC 3032: 4 bytes a label, S bit on the last). What follows
        the stack has no type field: IPv4 or IPv6 by its version nibble (as routers and Zeek
        read it), or, with a first nibble of 0, a pseudowire control word then an Ethernet
        frame (RFC 4385, 4448). Anything else is named as such, not as non-IP."""
        for _ in range(MAX_MPLS_LABELS):
            if end - off < 4:
                return self._dropped("short_link_header")
            bottom = b[off + 2] & 0x01
            off += 4
            if bottom:
                break
        else:
            return self._dropped("unsupported_mpls_payload")
        if end - off < 1:
            return self._dropped("short_link_header")
        nib = b[off] >> 4
        if nib == 4:
            return self._network(b, off, end, ETH_IPV4, ts_ns, vni, mirror_src, depth)
        if nib == 6:
            return self._network(b, off, end, ETH_IPV6, ts_ns, vni, mirror_src, depth)
        if nib == 0 and depth < MAX_ENCAP:
            return self._ethernet(b, off + 4, end, ts_ns, vni, mirror_src, depth + 1)
        return self._dropped("unsupported_mpls_payload")

    # -- network layer ----------------------------------------------------------------------
    def _network(self, b, off, end, et, ts_ns, vni, mirror_src, depth):
        if et in ETH_MPLS:
            return self._mpls(b, off, end, ts_ns, vni, mirror_src, depth)
        avail = end - off
        if et == ETH_IPV4:
            if avail < 20:
                return self._dropped("truncated_ip_header")
            vihl, tot, frag, proto, src, dst = _IPV4.unpack_from(b, off)
            ihl = (vihl & 0x0F) * 4
            if vihl >> 4 != 4 or ihl < 20:
                return self._dropped("bad_ip_header")
            if avail < ihl:
                return self._dropped("truncated_ip_header")
            if tot == 0:
                # Captured on a host with segmentation offload: the kernel left the length to
                # the NIC. Take what the frame holds.
                tot = avail
            elif tot < ihl:
                return self._dropped("bad_ip_header")
            more_frags = frag & 0x2000
            frag_off = frag & 0x1FFF
            fragment = bool(more_frags or frag_off)
            first_fragment = frag_off == 0
            l4 = off + ihl
            l4_wire = tot - ihl
            ip_version = 4
        elif et == ETH_IPV6:
            if avail < 40:
                return self._dropped("truncated_ip_header")
            if b[off] >> 4 != 6:
                return self._dropped("bad_ip_header")
            plen, nxt, src, dst = _IPV6.unpack_from(b, off)
            tot = plen + 40 if plen else avail  # 0: jumbogram or offload; take what is there
            l4 = off + 40
            fragment = False
            first_fragment = True
            # Walk the extension headers to the transport header.
            stop = min(end, off + tot)
            while nxt in _IPV6_EXT_HEADERS or nxt == _IPV6_FRAGMENT or nxt == _IPV6_AH:
                if stop - l4 < 8:
                    return self._dropped("truncated_ip_header")
                if nxt == _IPV6_FRAGMENT:
                    fragment = True
                    first_fragment = (_U16.unpack_from(b, l4 + 2)[0] & 0xFFF8) == 0
                    if not first_fragment:
                        # What follows is the middle of the original packet: no more headers.
                        nxt = b[l4]
                        l4 += 8
                        break
                    hlen = 8
                elif nxt == _IPV6_AH:
                    hlen = (b[l4 + 1] + 2) * 4
                else:
                    hlen = (b[l4 + 1] + 1) * 8
                nxt = b[l4]
                l4 += hlen
            if l4 - off > tot:
                return self._dropped("bad_ip_header")
            proto = nxt
            l4_wire = tot - (l4 - off)
            ip_version = 6
        else:
            return self._dropped("non_ip")

        ip_end = off + tot
        truncated = ip_end > end
        if truncated:
            ip_end = end
        # Bytes past the IP length are link padding (Ethernet pads to 60), not payload.
        cap_len = ip_end - off

        sport = dport = flags = seq = ack = 0
        window = -1 if proto == PROTO_TCP else 0  # a TCP window not in this packet is unknown
        payload_len = 0
        data_off = l4
        if first_fragment:
            l4_avail = ip_end - l4
            if proto == PROTO_TCP:
                if l4_avail < 4:
                    return self._dropped("truncated_transport_header")
                if l4_avail >= 14:
                    sport, dport, seq, ack, doff, flags = _TCP.unpack_from(b, l4)
                    window = _WIN.unpack_from(b, l4 + 14)[0] if l4_avail >= 16 else -1
                    hlen = (doff >> 4) * 4
                    if hlen < 20:
                        hlen = 20
                    # A data offset past the segment's end is malformed, not cut short:
                    # ``truncated`` stays what the capture says.
                    payload_len = max(0, l4_wire - hlen)
                    data_off = l4 + hlen
                else:
                    sport, dport = _PORTS.unpack_from(b, l4)
                    truncated = True
                    data_off = ip_end
            elif proto == PROTO_UDP:
                if l4_avail < 4:
                    return self._dropped("truncated_transport_header")
                sport, dport = _PORTS.unpack_from(b, l4)
                payload_len = max(0, l4_wire - 8)
                data_off = l4 + 8
                if l4_avail < 8:
                    truncated = True
                elif not fragment and (dport in self.vxlan_ports or dport in self.geneve_ports):
                    return self._tunnel(b, l4 + 8, ip_end, dport, src, ts_ns, depth)
            elif proto == PROTO_SCTP:
                if l4_avail < 4:
                    return self._dropped("truncated_transport_header")
                sport, dport = _PORTS.unpack_from(b, l4)
                payload_len = max(0, l4_wire - 12)
                data_off = l4 + 12
                if l4_avail < 12:
                    truncated = True
            elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
                if l4_avail < 2:
                    return self._dropped("truncated_transport_header")
                sport, dport = b[l4], b[l4 + 1]
                payload_len = max(0, l4_wire - 8)
                data_off = l4 + 8
                if l4_avail < 8:
                    truncated = True
            else:
                payload_len = max(0, l4_wire)

        payload = b""
        pol = self.payload
        if payload_len and pol.max_bytes > 0 and (pol.ports is None or sport in pol.ports or dport in pol.ports):
            payload = bytes(b[data_off:min(ip_end, data_off + payload_len, data_off + pol.max_bytes)])

        direction = None
        if mirror_src is not None:
            if src == mirror_src:
                direction = "egress"
            elif dst == mirror_src:
                direction = "ingress"

        self.decoded += 1
        return PacketRecord(
            ts_ns, vni, mirror_src, ip_version, src, dst, proto, sport, dport, flags, seq, ack,
            tot, cap_len, payload_len, payload, truncated, fragment, direction, window,
        )

    # -- tunnels ----------------------------------------------------------------------------
    def _tunnel(self, b, off, end, dport, outer_src, ts_ns, depth, vxlan=False):
        if depth >= MAX_ENCAP:
            return self._dropped("too_many_encapsulations")
        if vxlan or dport in self.vxlan_ports:
            # RFC 7348: flags(8) reserved(24) VNI(24) reserved(8). Only the I bit is checked:
            # real senders leave other bits set (see the non-zero-reserved corpus capture).
            if end - off < 8 or not b[off] & 0x08:
                return self._dropped("bad_vxlan")
            vni = _U32.unpack_from(b, off + 4)[0] >> 8
            return self._ethernet(b, off + 8, end, ts_ns, vni, outer_src, depth + 1)
        # GENEVE (RFC 8926): ver(2) opt len(6) flags(8) protocol(16) VNI(24) reserved(8) options.
        if end - off < 8 or b[off] >> 6 != 0:
            return self._dropped("bad_geneve")
        opt_len = (b[off] & 0x3F) * 4
        ptype = _U16.unpack_from(b, off + 2)[0]
        vni = _U32.unpack_from(b, off + 4)[0] >> 8
        inner = off + 8 + opt_len
        if inner > end:
            return self._dropped("bad_geneve")
        if ptype == GENEVE_PROTO_ETHERNET:
            return self._ethernet(b, inner, end, ts_ns, vni, outer_src, depth + 1)
        return self._network(b, inner, end, ptype, ts_ns, vni, outer_src, depth + 1)
