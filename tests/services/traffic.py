"""Synthetic mirror traffic: VXLAN datagrams of many inner flows, both directions, as an AWS
mirror source (or the lab's kernel VXLAN device) sends them, and pcap files of them.

Each flow is a TCP conversation between a client and the mirrored server (whose address is
the mirror source, so every record's direction is known): handshake, request with payload,
response with payload, FIN/ACK teardown. ``outer_sport`` differs per direction, like the
kernel's and AWS's per-flow hashing, so a SO_REUSEPORT group or an NLB may hand the two
directions to different collector processes.
"""

from __future__ import annotations

import random
import socket
import struct
from dataclasses import dataclass


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: bytes, dst: bytes, proto: int, l4: bytes, ident: int = 0) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident & 0xFFFF, 0x4000, 64, proto,
                      0, src, dst)
    return hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + l4


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                       flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ether(ip_packet: bytes, src_mac: bytes = b"\x02\0\0\0\0\x01",
          dst_mac: bytes = b"\x02\0\0\0\0\x02") -> bytes:
    return dst_mac + src_mac + b"\x08\x00" + ip_packet


def vxlan(vni: int, frame: bytes) -> bytes:
    """A VXLAN UDP payload (what a collector's socket receives)."""
    return struct.pack("!II", 0x08000000, vni << 8) + frame


def outer_frame(outer_src: bytes, outer_dst: bytes, outer_sport: int, payload: bytes,
                dport: int = 4789) -> bytes:
    """Ethernet/IPv4/UDP frame carrying a VXLAN payload (as a capture on the collector shows)."""
    return ether(ipv4(outer_src, outer_dst, 17, udp(outer_sport, dport, payload)))


@dataclass
class Datagram:
    payload: bytes  # VXLAN UDP payload
    outer_sport: int
    vni: int
    flow: int  # index of the flow
    forward: bool  # client -> server


def tcp_flows(n_flows: int, vni: int = 1234, server: str = "10.0.0.5", server_port: int = 80,
              client_net: str = "10.1.0.0", seed: int = 7, request: bytes | None = None,
              response_len: int = 300, interleave: bool = True) -> list[Datagram]:
    """Datagrams of n_flows TCP conversations with the mirrored server (10 packets each)."""
    rnd = random.Random(seed)
    srv = socket.inet_aton(server)
    base = struct.unpack("!I", socket.inet_aton(client_net))[0]
    flows: list[list[Datagram]] = []
    for i in range(n_flows):
        cli = struct.pack("!I", base + 1 + (i % 60000))
        cport = 20000 + (i * 7919) % 40000
        fwd_sport = 49152 + rnd.randrange(16384)
        rev_sport = 49152 + rnd.randrange(16384)
        while rev_sport == fwd_sport:
            rev_sport = 49152 + rnd.randrange(16384)
        cs, ss = rnd.randrange(1 << 32), rnd.randrange(1 << 32)
        req = request or (b"GET /item/%d HTTP/1.1\r\nHost: lab\r\nUser-Agent: t\r\n\r\n" % i)
        resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % response_len + b"x" * response_len
        pk = []

        def add(forward: bool, flags: int, seq: int, ack: int, data: bytes = b""):
            if forward:
                ip = ipv4(cli, srv, 6, tcp(cport, server_port, seq, ack, flags, data))
            else:
                ip = ipv4(srv, cli, 6, tcp(server_port, cport, seq, ack, flags, data))
            pk.append(Datagram(vxlan(vni, ether(ip)), fwd_sport if forward else rev_sport, vni,
                               i, forward))

        add(True, 0x02, cs, 0)
        add(False, 0x12, ss, cs + 1)
        add(True, 0x10, cs + 1, ss + 1)
        add(True, 0x18, cs + 1, ss + 1, req)
        add(False, 0x10, ss + 1, cs + 1 + len(req))
        add(False, 0x18, ss + 1, cs + 1 + len(req), resp)
        add(True, 0x10, cs + 1 + len(req), ss + 1 + len(resp))
        add(True, 0x11, cs + 1 + len(req), ss + 1 + len(resp))
        add(False, 0x11, ss + 1 + len(resp), cs + 2 + len(req))
        add(True, 0x10, cs + 2 + len(req), ss + 2 + len(resp))
        flows.append(pk)
    if not interleave:
        return [d for f in flows for d in f]
    # Round-robin over flows: packets of many flows in flight at once, each flow in order.
    out: list[Datagram] = []
    for j in range(10):
        for f in flows:
            out.append(f[j])
    return out


def write_pcap(path, frames: list[bytes], ts_start_ns: int = 1_700_000_000_000_000_000,
               step_ns: int = 10_000) -> None:
    """A classic pcap (Ethernet, microseconds) of the given frames."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        t = ts_start_ns
        for fr in frames:
            us = t // 1000
            f.write(struct.pack("<IIII", us // 1_000_000, us % 1_000_000, len(fr), len(fr)))
            f.write(fr)
            t += step_ns


def capture_of(datagrams: list[Datagram], mirror_src: str = "10.0.0.5",
               collector: str = "10.0.9.9") -> list[bytes]:
    """Outer frames of datagrams, as tcpdump on the collector would record them."""
    ms, co = socket.inet_aton(mirror_src), socket.inet_aton(collector)
    return [outer_frame(ms, co, d.outer_sport, d.payload) for d in datagrams]


def send(datagrams: list[Datagram], host: str, port: int, sockets: int = 16,
         pace_every: int = 0, pace_s: float = 0.0) -> int:
    """Send each datagram from one of ``sockets`` UDP sockets chosen by its outer source port
    (so SO_REUSEPORT spreads them like distinct mirror sources would). Returns the count."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
    try:
        import time
        for i, d in enumerate(datagrams):
            socks[d.outer_sport % sockets].sendto(d.payload, (host, port))
            if pace_every and i % pace_every == pace_every - 1:
                time.sleep(pace_s)
        return len(datagrams)
    finally:
        for s in socks:
            s.close()


def dns_lookups(n: int, vni: int = 1234, resolver: str = "10.0.0.53",
                client_net: str = "10.2.0.0", seed: int = 5) -> list[Datagram]:
    """Datagrams of n DNS lookups over UDP (query, then the resolver's answer: an A record,
    every fourth name NXDOMAIN), built with dpkt, each its own flow."""
    import dpkt
    rnd = random.Random(seed)
    res = socket.inet_aton(resolver)
    base = struct.unpack("!I", socket.inet_aton(client_net))[0]
    out: list[Datagram] = []
    for i in range(n):
        cli = struct.pack("!I", base + 1 + i % 200)
        cport = 30000 + i
        name = f"svc{i}.internal.example"
        q = dpkt.dns.DNS(id=rnd.randrange(1 << 16), op=dpkt.dns.DNS_RD,
                         qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN)])
        r = dpkt.dns.DNS(bytes(q))
        r.op = dpkt.dns.DNS_QR | dpkt.dns.DNS_RD | dpkt.dns.DNS_RA
        if i % 4 == 3:
            r.rcode = dpkt.dns.DNS_RCODE_NXDOMAIN
        else:
            r.an = [dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN, ttl=60,
                                    ip=socket.inet_aton(f"192.0.2.{i % 250 + 1}"))]
        fwd = ipv4(cli, res, 17, udp(cport, 53, bytes(q)))
        rev = ipv4(res, cli, 17, udp(53, cport, bytes(r)))
        sport = 40000 + rnd.randrange(8000)
        out.append(Datagram(vxlan(vni, ether(fwd)), sport, vni, -1, True))
        out.append(Datagram(vxlan(vni, ether(rev)), sport + 8000, vni, -1, False))
    return out
