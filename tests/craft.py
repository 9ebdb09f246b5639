"""Captures crafted for tests: real pcap files of Ethernet/IPv4 frames built with dpkt.

A test states the traffic (who sends what, in which order the mirror delivered it) and gets a
pcap file that the whole pipeline reads as it reads any capture (decode, flows, HTTP). Frames
carry correct IP lengths and checksums (dpkt computes them) so tshark reads them too.

Expected values in the tests that use this come from the RFCs and Zeek's documented
behaviour, each cited where it is asserted, never from our own output.
"""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt

MAC_A = b"\x02\x00\x00\x00\x00\x01"
MAC_B = b"\x02\x00\x00\x00\x00\x02"
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def ipv4_packet(src: bytes, dst: bytes, proto: int, l4) -> dpkt.ip.IP:
    ip = dpkt.ip.IP(src=src, dst=dst, p=proto, ttl=64, data=l4)
    ip.len = len(ip)
    return ip


def ethernet(ip_packet, src_mac: bytes = MAC_A, dst_mac: bytes = MAC_B) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=src_mac, dst=dst_mac, type=0x0800, data=ip_packet))


def write_pcap(path: Path, frames: list[tuple[float, bytes]], linktype: int = 1) -> Path:
    """Frames in capture order; their timestamps must not go backwards (a capture's don't)."""
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=linktype, snaplen=65535)
        last = 0.0
        for ts, frame in frames:
            assert ts >= last, "capture timestamps go forward"
            last = ts
            w.writepkt(frame, ts=ts)
    return path


class TcpConversation:
    """One TCP connection's segments, client A:port -> server B:80, with true sequence and
    acknowledgment numbers. Segments are made in the order the endpoints sent them; the
    capture order (what the mirror delivered) is chosen when the frames are taken."""

    def __init__(self, client="10.0.0.1", server="10.0.0.2", cport=40000, sport=80,
                 cisn=1000, sisn=50000):
        self.a, self.b = ip4(client), ip4(server)
        self.cport, self.sport = cport, sport
        self.cseq, self.sseq = cisn, sisn
        self.segments: list[tuple[bool, int, bytes]] = []  # (from client, frame, payload)

    def _seg(self, client: bool, flags: int, data: bytes = b"", win: int = 65535) -> int:
        seq, ack = (self.cseq, self.sseq) if client else (self.sseq, self.cseq)
        src, dst, sp, dp = ((self.a, self.b, self.cport, self.sport) if client
                            else (self.b, self.a, self.sport, self.cport))
        tcp = dpkt.tcp.TCP(sport=sp, dport=dp, seq=seq, ack=ack if flags & ACK else 0,
                           flags=flags, win=win, data=data)
        frame = ethernet(ipv4_packet(src, dst, 6, tcp), *((MAC_A, MAC_B) if client else (MAC_B, MAC_A)))
        self.segments.append((client, frame, data))
        if client:
            self.cseq = (self.cseq + len(data) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        else:
            self.sseq = (self.sseq + len(data) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        return len(self.segments) - 1

    def handshake(self) -> TcpConversation:
        self._seg(True, SYN)
        self._seg(False, SYN | ACK)
        self._seg(True, ACK)
        return self

    def client(self, data: bytes) -> int:
        """A client data segment; returns its index (to reorder or drop it)."""
        return self._seg(True, PSH | ACK, data)

    def server(self, data: bytes) -> int:
        return self._seg(False, PSH | ACK, data)

    def ack(self, client: bool, win: int = 65535) -> int:
        """A pure ACK (win=0: a zero-window advertisement); returns its index."""
        return self._seg(client, ACK, b"", win)

    def syn(self) -> int:
        """A SYN alone (the handshake's first segment; repeat its index to resend it)."""
        return self._seg(True, SYN)

    def syn_ack(self) -> int:
        return self._seg(False, SYN | ACK)

    def skip_server(self, n: int) -> None:
        """n server bytes the client received but the mirror never copied."""
        self.sseq = (self.sseq + n) & 0xFFFFFFFF

    def close(self) -> TcpConversation:
        self._seg(True, FIN | ACK)
        self._seg(False, FIN | ACK)
        self._seg(True, ACK)
        return self

    def frames(self, order: list[int] | None = None, t0: float = 1.0, step: float = 0.001,
               drop: set[int] = frozenset()) -> list[tuple[float, bytes]]:
        """The frames in capture order (default: as sent), timestamped in that order."""
        idx = [i for i in (order if order is not None else range(len(self.segments))) if i not in drop]
        return [(t0 + k * step, self.segments[i][1]) for k, i in enumerate(idx)]


def udp_frame(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    return ethernet(ipv4_packet(ip4(src), ip4(dst), 17, dpkt.udp.UDP(sport=sport, dport=dport, data=data)))


def icmp_echo(src: str, dst: str, reply: bool) -> bytes:
    icmp = dpkt.icmp.ICMP(type=0 if reply else 8, code=0,
                          data=dpkt.icmp.ICMP.Echo(id=7, seq=1, data=b"ping"))
    return ethernet(ipv4_packet(ip4(src), ip4(dst), 1, icmp))


def llc_snap_frame(ip_packet) -> bytes:
    """IEEE 802.3 with an LLC/SNAP header (RFC 1042): length, AA AA 03, OUI 0, EtherType."""
    body = b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + bytes(ip_packet)
    return MAC_B + MAC_A + struct.pack("!H", len(body)) + body


def mpls_frame(ip_packet, labels=(16, 17)) -> bytes:
    """Ethernet, EtherType 0x8847, a label stack with the S bit on the last (RFC 3032)."""
    stack = b"".join(struct.pack("!I", (label << 12) | ((i == len(labels) - 1) << 8) | 64)
                     for i, label in enumerate(labels))
    return MAC_B + MAC_A + b"\x88\x47" + stack + bytes(ip_packet)


def mpls_pseudowire_frame(inner_ethernet: bytes, label: int = 100) -> bytes:
    """Ethernet over MPLS (RFC 4448): one label, the 4-byte control word (RFC 4385), then the
    customer's Ethernet frame."""
    return (MAC_B + MAC_A + b"\x88\x47" + struct.pack("!I", (label << 12) | (1 << 8) | 64)
            + b"\x00\x00\x00\x00" + inner_ethernet)
