#!/usr/bin/env python3
"""A minimal real DNS exchange for the sample capture (stdlib only; used by make_sample.sh).

    sample_dns.py server ADDR [SECONDS]   answer A queries with ADDR on ADDR:53 until idle SECONDS
    sample_dns.py query SERVER NAME       send one A query for NAME, print the answer

The server answers every query with one A record (TTL 60) for ADDR; it is just enough for tshark
to decode a normal query/response pair on UDP 53.
"""
import socket
import struct
import sys


def serve(addr: str, idle: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    s.settimeout(idle)
    while True:
        try:
            q, peer = s.recvfrom(512)
        except TimeoutError:
            return
        if len(q) < 17:
            continue
        i = 12
        while i < len(q) and q[i] != 0:  # walk the QNAME labels
            i += q[i] + 1
        question = q[12:i + 5]  # QNAME, root label, QTYPE, QCLASS
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(addr)
        header = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)  # response, RD, RA, NOERROR
        s.sendto(header + question + answer, peer)


def query(server: str, name: str) -> None:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\x00"
    q = struct.pack("!HHHHHH", 0x4D53, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(3)
    c.sendto(q, (server, 53))
    r, _ = c.recvfrom(512)
    print(f"{name} A {socket.inet_ntoa(r[-4:])}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "server":
        serve(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 30.0)
    elif len(sys.argv) == 4 and sys.argv[1] == "query":
        query(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
