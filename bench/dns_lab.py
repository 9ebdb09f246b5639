#!/usr/bin/env python3
"""DNS traffic for the mirror lab (stdlib only): a small authoritative server and clients that
behave like resolver libraries and tunnelling tools. Used by bench/make_dns_capture.sh and
tests/e2e/test_dns_lab.py. No dig/dnsmasq/iodine is installable here, so both ends are
written on Python's sockets; every message on the wire is a real RFC 1035 message over real
UDP and TCP sockets through the kernel (and the lab's tc/VXLAN mirroring).

    dns_lab.py server ADDR [IDLE_SECONDS]      UDP and TCP on ADDR:53 until idle
    dns_lab.py client SERVER MODE COUNT [SEED] MODE: normal | tunnel | nxstorm | tcp

Zone: NAME.ok.lab -> A 198.18.0.1 (TTL 60; www.ok.lab is a CNAME first; AAAA answers
2001:db8::1; MX, TXT answered); anything under tunnel.lab -> TXT or NULL answers carrying
base32 data (a tunnel's downstream); everything else -> NXDOMAIN.
"""
from __future__ import annotations

import base64
import random
import select
import socket
import struct
import sys
import time


def encode_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".") if p) + b"\x00"


def parse_question(q: bytes):
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
        i += 1 + q[i]
    qtype, _ = struct.unpack("!HH", q[i + 1:i + 5])
    return ".".join(labels).lower(), qtype, q[12:i + 5]


def rr(rtype: int, ttl: int, rdata: bytes, ptr: int = 0x0C) -> bytes:
    return struct.pack("!HHHIH", 0xC000 | ptr, rtype, 1, ttl, len(rdata)) + rdata


def answer(q: bytes) -> bytes:
    name, qtype, question = parse_question(q)
    rcode, answers = 0, []
    if name.endswith("ok.lab"):
        if name == "www.ok.lab":
            answers.append(rr(5, 300, encode_name("web.ok.lab")))
        if qtype == 1:
            answers.append(rr(1, 60, socket.inet_aton("198.18.0.1")))
        elif qtype == 28:
            answers.append(rr(28, 60, socket.inet_pton(socket.AF_INET6, "2001:db8::1")))
        elif qtype == 15:
            answers.append(rr(15, 3600, struct.pack("!H", 10) + encode_name("mail.ok.lab")))
        elif qtype == 16:
            answers.append(rr(16, 120, b"\x0bv=spf1 -all"))
    elif name.endswith("tunnel.lab"):
        data = base64.b32encode(random.randbytes(60)).rstrip(b"=")
        answers.append(rr(qtype if qtype in (10, 16) else 16, 0,
                          data if qtype == 10 else bytes([len(data)]) + data))
    else:
        rcode = 3
    flags = 0x8400 | (q[2] & 0x01) << 8 | 0x80 | rcode  # QR, AA, RD copied, RA
    header = q[:2] + struct.pack("!HHHHH", flags, 1, len(answers), 0, 0)
    return header + question + b"".join(answers)


def serve(addr: str, idle: float) -> None:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((addr, 53))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, 53))
    t.listen(16)
    print("ready", flush=True)
    while True:
        r, _, _ = select.select([u, t], [], [], idle)
        if not r:
            return
        if u in r:
            q, peer = u.recvfrom(4096)
            try:
                u.sendto(answer(q), peer)
            except (IndexError, struct.error, UnicodeError):
                pass
        if t in r:
            c, _ = t.accept()
            c.settimeout(5)
            with c:
                buf = b""
                while True:
                    try:
                        chunk = c.recv(4096)
                    except OSError:
                        break
                    if not chunk:
                        break
                    buf += chunk
                    while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                        n = struct.unpack("!H", buf[:2])[0]
                        a = answer(buf[2:2 + n])
                        c.sendall(struct.pack("!H", len(a)) + a)
                        buf = buf[2 + n:]


def make_query(name: str, qtype: int, tid: int) -> bytes:
    return struct.pack("!HHHHHH", tid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, 1)


def ask(server: str, name: str, qtype: int, tid: int) -> None:
    """One lookup on a fresh socket (a new source port, as resolver libraries do)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    with s:
        s.sendto(make_query(name, qtype, tid), (server, 53))
        try:
            s.recvfrom(4096)
        except TimeoutError:
            pass


def client(server: str, mode: str, count: int, seed: int) -> None:
    rnd = random.Random(seed)
    if mode == "tcp":
        with socket.create_connection((server, 53), timeout=5) as c:
            for i in range(count):
                q = make_query(f"h{i}.ok.lab", rnd.choice((1, 28, 15)), rnd.getrandbits(16))
                c.sendall(struct.pack("!H", len(q)) + q)
                need = struct.unpack("!H", c.recv(2, socket.MSG_WAITALL))[0]
                c.recv(need, socket.MSG_WAITALL)
        return
    for i in range(count):
        tid = rnd.getrandbits(16)
        if mode == "normal":
            name = rnd.choice(["www.ok.lab", "api.ok.lab", "db.ok.lab", f"h{i % 40}.ok.lab",
                               "missing.example.lab"])
            ask(server, name, rnd.choice((1, 1, 1, 28, 15, 16)), tid)
        elif mode == "tunnel":
            # iodine-style: upstream data base32-encoded in long labels, NULL/TXT downstream.
            chunk = base64.b32encode(rnd.randbytes(60)).decode().rstrip("=").lower()
            ask(server, f"{chunk[:56]}.{chunk[56:]}.t.tunnel.lab", rnd.choice((10, 16)), tid)
        elif mode == "nxstorm":
            name = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14))
            ask(server, f"{name}.{rnd.choice(['com', 'net', 'org'])}", 1, tid)
        else:
            sys.exit(f"unknown mode {mode}")
        time.sleep(0.001)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 30.0)
    else:
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 1)
