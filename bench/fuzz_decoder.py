#!/usr/bin/env python3
"""Differential fuzzing of the C fast path (collectors/_fastdecode.c) against the reference
decoder (collectors/decode.py).

usage: python bench/fuzz_decoder.py [N] [--seed S] [--corpus DIR]     (N defaults to 1_000_000)

Feeds N frames through both decoders, for every supported link type: real frames from the
capture corpus (../shared/corpus from the repo root) and synthetic ones (Ethernet/VLAN/PPPoE,
LLC/SNAP, MPLS, raw IP, BSD null/loop, Linux cooked v1/v2; IPv4 with options and every length and fragment
field, IPv6 with extension headers; VXLAN and GENEVE, nested tunnels; TCP/UDP/ICMP/ICMPv6/SCTP
and other protocols), each mutated (random bytes, biased to the headers), truncated at a random
point, relabelled with another link type, or replaced by pure random bytes; a share also goes
through decode_vxlan. For every frame: neither decoder raises, and where the C path does not
decline its record equals (==) the reference decoder's. Several payload policies are cycled.

Prints frames/s, how many frames the C path took, and every failure (with the frame in hex).
Exit status 1 if anything failed.

The frame builder here (build_case, build_vxlan_case) is also what the hypothesis strategies of
tests/test_fastdecode_equivalence.py draw from, through a "chooser" (RandomChooser here,
a hypothesis draw there).
"""
from __future__ import annotations

import argparse
import ctypes
import mmap
import random
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from collectors.decode import Decoder, PayloadPolicy  # noqa: E402
from schemas.records import PacketRecord  # noqa: E402

LINKTYPES = (1, 101, 12, 14, 228, 229, 0, 108, 113, 276)
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"

# Small address pools, so that the outer source often equals an inner address (direction).
ADDR4 = (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([172, 31, 0, 238]))
ADDR6 = (bytes.fromhex("20010db8000000000000000000000001"),
         bytes.fromhex("20010db8000000000000000000000002"),
         bytes.fromhex("fe800000000000000000000000000001"))
PORTS = (80, 443, 53, 22, 8080, 1234, 0, 65535, 4789, 6081)
CLEAN_PORTS = (80, 443, 53, 22, 8080, 1234, 0, 65535)
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)


class RandomChooser:
    """The builder's source of choices, from a random.Random (fast, for the fuzz loop)."""

    def __init__(self, rng: random.Random):
        self.r = rng

    def int(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)

    def choice(self, seq):
        return seq[self.r.randrange(len(seq))]

    def bytes(self, n: int) -> bytes:
        return self.r.randbytes(n)

    def chance(self, p: float) -> bool:
        return self.r.random() < p


# -- the frame builder -----------------------------------------------------------------------

def _addr(c, v: int) -> bytes:
    if c.chance(0.8):
        return c.choice(ADDR4 if v == 4 else ADDR6)
    return c.bytes(4 if v == 4 else 16)


def _port(c, clean: bool) -> int:
    if c.chance(0.85):
        return c.choice(CLEAN_PORTS if clean else PORTS)
    p = c.int(0, 65535)
    return 80 if clean and p in (4789, 6081) else p


def _seqnum(c) -> int:
    return c.choice((0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)) if c.chance(0.3) else c.int(0, 0xFFFFFFFF)


def _length(c, correct: int, clean: bool, bits: int = 16) -> int:
    """A length field: mostly right, sometimes 0, short, long or random."""
    mode = "ok" if clean else c.choice(("ok", "ok", "ok", "ok", "ok", "ok", "zero", "short", "long", "random"))
    if mode == "ok":
        v = correct
    elif mode == "zero":
        v = 0
    elif mode == "short":
        v = correct - c.int(1, 40)
    elif mode == "long":
        v = correct + c.int(1, 100)
    else:
        v = c.int(0, (1 << bits) - 1)
    return max(0, v) & ((1 << bits) - 1)


def transport(c, version: int, clean: bool = False) -> tuple[int, bytes]:
    """(IP protocol, transport header + payload)."""
    kinds = ("tcp", "tcp", "udp", "udp", "icmp", "sctp") if clean else \
        ("tcp", "tcp", "udp", "udp", "icmp", "sctp", "other")
    kind = c.choice(kinds)
    payload = c.bytes(c.choice((0, 0, 1, 7, 30, 120)))
    if kind == "tcp":
        if clean or c.chance(0.9):
            doff = c.choice((5, 5, 5, 6, 8, 15))
        else:
            doff = c.int(0, 15)
        opts = c.bytes(max(0, doff - 5) * 4)
        low = 0 if c.chance(0.9) else c.int(0, 15)
        hdr = struct.pack("!HHIIBBHHH", _port(c, clean), _port(c, clean), _seqnum(c), _seqnum(c),
                          (doff << 4) | low, c.int(0, 255), c.int(0, 65535), 0, 0)
        return 6, hdr + opts + payload
    if kind == "udp":
        ulen = _length(c, 8 + len(payload), clean)
        return 17, struct.pack("!HHHH", _port(c, clean), _port(c, clean), ulen, 0) + payload
    if kind == "icmp":
        proto = 1 if version == 4 else 58
        if c.chance(0.1):
            proto = 59 - proto  # ICMP in IPv6 / ICMPv6 in IPv4: the reference takes both
        return proto, bytes([c.int(0, 255), c.int(0, 255)]) + c.bytes(6) + payload
    if kind == "sctp":
        return 132, struct.pack("!HH", _port(c, clean), _port(c, clean)) + c.bytes(8) + payload
    proto = c.choice((0, 2, 4, 41, 43, 44, 47, 50, 51, 60, 89, 255)) if c.chance(0.7) else c.int(0, 255)
    return proto, payload


def ipv4(c, proto: int, body: bytes, src: bytes, dst: bytes, clean: bool = False) -> bytes:
    if clean or c.chance(0.95):
        ihl = c.choice((5, 5, 5, 5, 6, 7, 15))
    else:
        ihl = c.int(0, 15)
    opts = c.bytes(max(0, ihl - 5) * 4)
    tot = _length(c, 20 + len(opts) + len(body), clean)
    if clean:
        frag = c.choice((0, 0x4000))
    elif c.chance(0.9):
        frag = c.choice((0, 0, 0, 0x4000, 0x4000, 0x2000, 0x2001, 0x0001, 0x8000, 0x6000))
    else:
        frag = c.int(0, 0xFFFF)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, c.int(0, 255), tot, c.int(0, 65535), frag,
                      c.int(0, 255), proto, 0, src, dst)
    return hdr + opts + body


def ipv6(c, proto: int, body: bytes, src: bytes, dst: bytes, clean: bool = False) -> bytes:
    n_ext = 0 if clean else c.choice((0, 0, 0, 0, 1, 2))
    exts = [c.choice((0, 43, 60, 44, 51, 135)) for _ in range(n_ext)]
    chain = exts + [proto]
    ext_bytes = b""
    for i, e in enumerate(exts):
        nxt = chain[i + 1]
        if e == 44:  # fragment: offset (13 bits) << 3 | M
            fo = c.choice((0, 1, 8, 9, 0xFFF8, c.int(0, 0xFFFF)))
            ext_bytes += struct.pack("!BBHI", nxt, 0, fo, c.int(0, 0xFFFFFFFF))
        elif e == 51:  # AH: (len + 2) * 4 bytes
            n = c.int(1, 4)
            ext_bytes += bytes([nxt, n]) + c.bytes((n + 2) * 4 - 2)
        else:
            n = c.int(0, 2)
            ext_bytes += bytes([nxt, n]) + c.bytes((n + 1) * 8 - 2)
    plen = _length(c, len(ext_bytes) + len(body), clean)
    first = 0x60000000 | (c.int(0, 0xFFFFFFF) if c.chance(0.3) else 0)
    return struct.pack("!IHBB16s16s", first, plen, chain[0], c.int(0, 255), src, dst) + ext_bytes + body


def ip_packet(c, v: int, proto: int, body: bytes, src: bytes, dst: bytes, clean: bool = False) -> bytes:
    return (ipv4 if v == 4 else ipv6)(c, proto, body, src, dst, clean)


def _ethertype(c, v: int, clean: bool) -> tuple[int, bytes]:
    """(ethertype, bytes between it and the IP header)."""
    right = 0x0800 if v == 4 else 0x86DD
    if clean:
        return right, b""
    mode = c.choice(("ok",) * 17 + ("swap", "pppoe", "random", "snap", "mpls"))
    if mode == "ok":
        return right, b""
    if mode == "snap":  # IEEE 802.3 length, LLC/SNAP (RFC 1042), then the EtherType
        oui = c.choice((b"\x00\x00\x00", b"\x00\x00\xf8", c.bytes(3)))
        llc = c.choice((b"\xaa\xaa\x03", c.bytes(3)))
        return c.int(0, 1500), llc + oui + struct.pack("!H", right)
    if mode == "mpls":  # a label stack, S bit on the last one (or, now and then, on none)
        n = c.int(1, 3)
        bottom = n - 1 if c.chance(0.9) else -1
        labels = b"".join(struct.pack("!I", (c.int(0, 0xFFFFF) << 12) | ((i == bottom) << 8) | 64)
                          for i in range(n))
        return c.choice((0x8847, 0x8848)), labels
    if mode == "swap":
        return 0x86DD if v == 4 else 0x0800, b""
    if mode == "pppoe":
        ppp = 0x0021 if v == 4 else 0x0057
        return 0x8864, struct.pack("!BBHHH", 0x11, 0, c.int(0, 65535), c.int(0, 65535), ppp)
    return c.int(0, 65535), b""


def ethernet(c, v: int, pkt: bytes, clean: bool = False) -> bytes:
    macs = c.bytes(12) if c.chance(0.2) else b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"
    ntags = c.choice((0, 0, 0, 1, 2)) if clean else c.choice((0, 0, 0, 1, 2, 3, 5))
    et, mid = _ethertype(c, v, clean)
    out = bytearray(macs)
    for _ in range(ntags):
        out += struct.pack("!HH", c.choice(VLAN_TPIDS), c.int(0, 0xFFFF))
    out += struct.pack("!H", et)
    out += mid
    out += pkt
    return bytes(out)


def _family(c, v: int, clean: bool) -> int:
    if clean or c.chance(0.9):
        return 2 if v == 4 else c.choice((10, 24, 28, 30))
    return c.choice((0, 1, 23, 0xFFFF, 0x10000, c.int(0, 0xFFFFFFFF)))


def link(c, lt: int, v: int, pkt: bytes, clean: bool = False) -> bytes:
    if lt == 1:
        return ethernet(c, v, pkt, clean)
    if lt in (101, 12, 14, 228, 229):
        return pkt
    if lt in (0, 108):
        fam = _family(c, v, clean)
        little = c.chance(0.5) if lt == 0 else (not clean and c.chance(0.05))
        return struct.pack("<I" if little else ">I", fam) + pkt
    et, mid = _ethertype(c, v, clean)
    if mid:  # PPPoE is an Ethernet thing: cooked captures carry no such header
        et = 0x8864
    if lt == 113:
        return struct.pack("!HHH8sH", c.int(0, 4), 1, 6, c.bytes(8), et) + pkt
    return struct.pack("!HHIHBB8s", et, 0, c.int(0, 99), 1, c.int(0, 4), 6, c.bytes(8)) + pkt


def vxlan_header(c, clean: bool = False) -> bytes:
    flags = 0x08 | (c.int(0, 255) if c.chance(0.2) else 0)
    if not clean and c.chance(0.1):
        flags = c.int(0, 255)
    reserved = c.bytes(3) if c.chance(0.2) else b"\0\0\0"
    last = c.int(0, 255) if c.chance(0.2) else 0
    return bytes([flags]) + reserved + c.int(0, 0xFFFFFF).to_bytes(3, "big") + bytes([last])


def _tunnel_body(c, v_out: int, mirror: bytes, clean: bool, level: int) -> bytes:
    """VXLAN (or GENEVE) header + inner Ethernet frame, for an outer source ``mirror``."""
    v_in = c.choice((4, 6))
    src = mirror if (len(mirror) == (4 if v_in == 4 else 16) and c.chance(0.3)) else _addr(c, v_in)
    dst = mirror if (len(mirror) == (4 if v_in == 4 else 16) and c.chance(0.3)) else _addr(c, v_in)
    if not clean and level < 2 and c.chance(0.05):
        # A tunnel inside the tunnel: the inner packet is itself VXLAN or GENEVE over UDP.
        inner_src = _addr(c, v_in)
        inner_body = _tunnel_body(c, v_in, inner_src, clean, level + 1)
        dport = c.choice((4789, 6081))
        proto, l4 = 17, struct.pack("!HHHH", _port(c, clean), dport, 8 + len(inner_body), 0) + inner_body
        src = inner_src
    else:
        proto, l4 = transport(c, v_in, clean)
    inner = ip_packet(c, v_in, proto, l4, src, dst, clean)
    frame = ethernet(c, v_in, inner, clean)
    if not clean and c.chance(0.05):  # GENEVE-looking header
        return c.bytes(8) + frame
    return vxlan_header(c, clean) + frame


def build_packet(c, clean: bool = False) -> tuple[int, bytes]:
    """(IP version, outermost IP packet), VXLAN-encapsulated half of the time."""
    if c.chance(0.5):
        v_out = c.choice((4, 6))
        mirror = _addr(c, v_out)
        body = _tunnel_body(c, v_out, mirror, clean, 1)
        dport = 4789 if clean or c.chance(0.9) else c.choice((6081, c.int(0, 65535)))
        udp = struct.pack("!HHHH", c.int(0, 65535), dport, _length(c, 8 + len(body), clean), 0) + body
        return v_out, ip_packet(c, v_out, 17, udp, mirror, _addr(c, v_out), clean)
    v = c.choice((4, 6))
    proto, l4 = transport(c, v, clean)
    return v, ip_packet(c, v, proto, l4, _addr(c, v), _addr(c, v), clean)


def mutate(c, frame: bytes) -> bytes:
    """Link padding, truncation at a random point, random bytes changed (biased to headers)."""
    if c.chance(0.15):
        frame += bytes(c.choice((1, 4, 18))) if c.chance(0.5) else c.bytes(c.choice((1, 4, 18)))
    if frame and c.chance(0.15):
        frame = frame[:c.int(0, len(frame))]
    if frame and c.chance(0.25):
        b = bytearray(frame)
        for _ in range(c.choice((1, 1, 2, 3, 6))):
            hi = len(b) - 1 if c.chance(0.2) else min(len(b) - 1, 110)
            b[c.int(0, hi)] = c.int(0, 255)
        frame = bytes(b)
    return frame


def build_case(c, clean: bool = False, lt: int | None = None) -> tuple[int, bytes]:
    """(link type, frame). clean=True: only what the C path must take (no declines)."""
    if lt is None:
        lt = c.choice(LINKTYPES)
    if clean and lt in (228, 229):
        v = 4 if lt == 228 else 6
        proto, l4 = transport(c, v, True)
        return lt, ip_packet(c, v, proto, l4, _addr(c, v), _addr(c, v), True)
    v, pkt = build_packet(c, clean)
    frame = link(c, lt, v, pkt, clean)
    return lt, frame if clean else mutate(c, frame)


def build_vxlan_case(c, clean: bool = False) -> tuple[bytes, bytes]:
    """(VXLAN datagram's UDP payload, outer source address) for decode_vxlan."""
    v_out = c.choice((4, 6))
    mirror = _addr(c, v_out)
    data = _tunnel_body(c, v_out, mirror, clean, 1)
    return (data if clean else mutate(c, data)), mirror


# -- the fuzz loop ---------------------------------------------------------------------------

class GuardedBuffer:
    """Memory followed by an inaccessible page: a frame placed with place() ends exactly where
    that page starts, so a read past its end crashes (SIGSEGV) instead of silently reading
    whatever follows a bytes object. Linux/POSIX only (mmap + mprotect through ctypes)."""

    def __init__(self, size: int = 1 << 16):
        page = mmap.PAGESIZE
        self.span = -(-size // page) * page
        self.m = mmap.mmap(-1, self.span + page)
        self._anchor = ctypes.c_char.from_buffer(self.m)
        self.address = ctypes.addressof(self._anchor)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if libc.mprotect(self.address + self.span, page, 0) != 0:  # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect failed")
        self.mv = memoryview(self.m)

    def place(self, data: bytes) -> memoryview:
        if len(data) > self.span:
            raise ValueError("frame larger than the guarded buffer")
        start = self.span - len(data)
        self.m[start:self.span] = data
        return self.mv[start:self.span]


def guarded_buffer() -> GuardedBuffer | None:
    try:
        return GuardedBuffer()
    except (OSError, AttributeError, ValueError, TypeError):
        return None


POLICIES = (
    PayloadPolicy(0),
    PayloadPolicy(64, None),
    PayloadPolicy(16, frozenset({80, 53, 8080})),
    PayloadPolicy(1 << 20, None),
    PayloadPolicy(1, frozenset({0, 65535})),
)


def corpus_frames(corpus: Path | None, limit_per_file: int = 2000) -> list[tuple[int, bytes]]:
    """Every frame of every capture under ``corpus`` whose link type is supported."""
    from collectors.capture import CaptureError, open_capture
    from collectors.decode import SUPPORTED_LINKTYPES

    out: list[tuple[int, bytes]] = []
    if corpus is None or not corpus.is_dir():
        return out
    for p in sorted(corpus.rglob("*")):
        if not p.is_file() or p.suffix in (".md", ".json"):
            continue
        try:
            r = open_capture(p)
        except CaptureError:
            continue
        try:
            for k, (_ts, lt, _orig, frame) in enumerate(r.frames()):
                if k >= limit_per_file:
                    break
                if lt in SUPPORTED_LINKTYPES:
                    out.append((lt, frame))
        finally:
            r.close()
    return out


def pcap_walk(buf: bytes, big_endian: bool, ts_scale: int, max_record: int = 1 << 18):
    """What collectors.capture.PcapReader.frames does with one buffer of pcap records:
    ([(ts_ns, frame)], pos of the first byte not consumed, whether a corrupt header stopped it)."""
    e = ">" if big_endian else "<"
    out, pos, n = [], 0, len(buf)
    while n - pos >= 16:
        sec, frac, caplen, _ = struct.unpack_from(e + "IIII", buf, pos)
        if caplen > max_record:
            return out, pos, True
        if pos + 16 + caplen > n:
            break
        out.append((sec * 1_000_000_000 + frac * ts_scale, bytes(buf[pos + 16:pos + 16 + caplen])))
        pos += 16 + caplen
    return out, pos, False


@dataclass
class FuzzStats:
    frames: int = 0
    taken: int = 0            # the C path returned a record
    python_records: int = 0   # the reference returned a record
    vxlan_calls: int = 0
    pcap_calls: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(what)


def run_fuzz(n: int, seed: int = 0, corpus: Path | None = DEFAULT_CORPUS,
             n_synthetic: int = 4000, guard: bool = True) -> FuzzStats:
    """Fuzz n frames; with guard (where the platform allows), every other frame is given to the
    C path at the very end of readable memory, so that a read out of bounds crashes."""
    from collectors import _fastdecode

    rng = random.Random(seed)
    ch = RandomChooser(rng)
    real = corpus_frames(corpus)
    synthetic = [build_case(ch) for _ in range(n_synthetic)]
    synthetic += [build_case(ch, clean=True) for _ in range(n_synthetic // 4)]
    vx_templates = [build_vxlan_case(ch, clean=ch.chance(0.3)) for _ in range(max(1, n_synthetic // 4))]
    pools = [p for p in (real, synthetic) if p]

    decoders = [Decoder(payload=pol) for pol in POLICIES]
    cfgs = {(i, lt): _fastdecode.Config(PacketRecord, pol.max_bytes, pol.port_bitmap(), False, 1000, lt)
            for i, pol in enumerate(POLICIES) for lt in LINKTYPES}
    pcap_cfgs = {(lt, big): _fastdecode.Config(PacketRecord, POLICIES[1].max_bytes, POLICIES[1].port_bitmap(),
                                              big, 1 if big else 1000, lt)
                 for lt in LINKTYPES for big in (False, True)}
    decode_frame = _fastdecode.decode_frame
    decode_vxlan = _fastdecode.decode_vxlan
    randrange, rand, randbytes = rng.randrange, rng.random, rng.randbytes
    gb = guarded_buffer() if guard else None
    place = gb.place if gb is not None else (lambda data: data)
    st = FuzzStats()
    npol = len(POLICIES)
    nlt = len(LINKTYPES)
    ts0 = 1_700_000_000_000_000_000
    t0 = time.perf_counter()
    for i in range(n):
        pi = i % npol
        dec = decoders[pi]
        ts = ts0 + i
        if i % 100 == 99:  # decode_pcap on a few records, cut or with a corrupt length
            _fuzz_pcap(st, rng, pools, pcap_cfgs, decoders[1], place, _fastdecode.decode_pcap)
            continue
        r = rand()
        if r < 0.05:  # decode_vxlan
            data, osrc = vx_templates[randrange(len(vx_templates))]
            if rand() < 0.7 and data:
                b = bytearray(data)
                for _ in range(1 + randrange(3)):
                    b[randrange(min(len(b), 80))] = randrange(256)
                data = bytes(b)
            if rand() < 0.2:
                data = data[:randrange(len(data) + 1)]
            st.vxlan_calls += 1
            cfg = cfgs[(pi, 1)]
            try:
                rc = decode_vxlan(cfg, place(data) if i & 1 else data, osrc, ts)
            except Exception as exc:  # noqa: BLE001
                st.fail(f"C decode_vxlan raised {exc!r}: data={data.hex()} outer_src={osrc.hex()}")
                continue
            try:
                rp = dec.decode_vxlan(data, osrc, ts)
            except Exception as exc:  # noqa: BLE001
                st.fail(f"reference decode_vxlan raised {exc!r}: data={data.hex()} outer_src={osrc.hex()}")
                continue
            st.frames += 1
            if rp is not None:
                st.python_records += 1
            if rc is not None:
                st.taken += 1
                if rc != rp:
                    st.fail(f"decode_vxlan mismatch policy={POLICIES[pi]} data={data.hex()} "
                            f"outer_src={osrc.hex()}\n  C:   {rc}\n  ref: {rp}")
            continue
        if r < 0.08:  # pure random bytes
            lt = LINKTYPES[randrange(nlt)]
            frame = randbytes(randrange(0, 100))
        else:
            pool = pools[randrange(len(pools))]
            lt, frame = pool[randrange(len(pool))]
            m = rand()
            if m < 0.55 and frame:  # change a few bytes, mostly in the headers
                b = bytearray(frame)
                hi = len(b) if rand() < 0.2 else min(len(b), 120)
                for _ in range(1 + randrange(4)):
                    b[randrange(hi)] = randrange(256)
                frame = bytes(b)
            if rand() < 0.15:
                frame = frame[:randrange(len(frame) + 1)]
            if rand() < 0.05:
                lt = LINKTYPES[randrange(nlt)]
        cfg = cfgs[(pi, lt)]
        try:
            rc = decode_frame(cfg, place(frame) if i & 1 and len(frame) <= 65536 else frame, ts)
        except Exception as exc:  # noqa: BLE001
            st.fail(f"C decode_frame raised {exc!r}: linktype={lt} frame={frame.hex()}")
            continue
        try:
            rp = dec.decode(frame, lt, ts)
        except Exception as exc:  # noqa: BLE001
            st.fail(f"reference decode raised {exc!r}: linktype={lt} frame={frame.hex()}")
            continue
        st.frames += 1
        if rp is not None:
            st.python_records += 1
        if rc is not None:
            st.taken += 1
            if rc != rp:
                st.fail(f"mismatch linktype={lt} policy={POLICIES[pi]} frame={frame.hex()}\n"
                        f"  C:   {rc}\n  ref: {rp}")
    st.seconds = time.perf_counter() - t0
    return st


def _fuzz_pcap(st: FuzzStats, rng: random.Random, pools, cfgs, dec: Decoder, place, decode_pcap) -> None:
    lt = LINKTYPES[rng.randrange(len(LINKTYPES))]
    big = rng.random() < 0.5
    scale = 1 if big else 1000
    e = ">" if big else "<"
    buf = bytearray()
    for _ in range(rng.randrange(6)):
        pool = pools[rng.randrange(len(pools))]
        frame = pool[rng.randrange(len(pool))][1]
        if rng.random() < 0.1:
            caplen = rng.choice((1 << 18, (1 << 18) + 1, 0xFFFFFFFF, rng.randrange(1 << 32)))
        else:
            caplen = len(frame)
        buf += struct.pack(e + "IIII", rng.randrange(1 << 32), rng.randrange(1 << 32), caplen, len(frame))
        buf += frame
    if rng.random() < 0.3:
        buf = buf[:rng.randrange(len(buf) + 1)]
    buf = bytes(buf)
    st.pcap_calls += 1
    try:
        items, pos, nframes, nbytes = decode_pcap(cfgs[(lt, big)], place(buf))
    except Exception as exc:  # noqa: BLE001
        st.fail(f"C decode_pcap raised {exc!r}: linktype={lt} big_endian={big} buf={buf.hex()}")
        return
    expected, exp_pos, corrupt = pcap_walk(buf, big, scale)
    problem = None
    if (pos, nframes, nbytes) != (-exp_pos - 1 if corrupt else exp_pos, len(expected),
                                   sum(len(f) for _, f in expected)):
        problem = f"pos/nframes/nbytes {(pos, nframes, nbytes)} expected {exp_pos} {corrupt} {len(expected)}"
    elif len(items) != len(expected):
        problem = f"{len(items)} items for {len(expected)} records"
    else:
        for it, (ts, frame) in zip(items, expected):
            st.frames += 1
            if type(it) is tuple:
                if it != (ts, frame) or type(it[1]) is not bytes:
                    problem = f"declined item {it!r} for {(ts, frame)!r}"
            else:
                st.taken += 1
                try:
                    ref = dec.decode(frame, lt, ts)
                except Exception as exc:  # noqa: BLE001
                    problem = f"reference decode raised {exc!r} on frame {frame.hex()}"
                    break
                st.python_records += ref is not None
                if it != ref:
                    problem = f"record mismatch on frame {frame.hex()}\n  C:   {it}\n  ref: {ref}"
            if problem:
                break
    if problem:
        st.fail(f"decode_pcap linktype={lt} big_endian={big} buf={buf.hex()}: {problem}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=1_000_000, help="frames (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                    help="capture corpus to take real frames from (default ../shared/corpus)")
    args = ap.parse_args(argv)
    try:
        from collectors import _fastdecode  # noqa: F401
    except ImportError:
        print("collectors._fastdecode is not built (pip install -e . or build_ext --inplace)",
              file=sys.stderr)
        return 2
    st = run_fuzz(args.n, args.seed, args.corpus)
    print(f"{st.frames:,} frames ({st.vxlan_calls:,} through decode_vxlan; plus {st.pcap_calls:,} "
          f"decode_pcap buffers) in {st.seconds:.1f} s: "
          f"{st.frames / st.seconds:,.0f} frames/s through both decoders")
    print(f"reference records: {st.python_records:,}; C path took {st.taken:,} "
          f"({st.taken / max(1, st.frames):.1%} of frames, "
          f"{st.taken / max(1, st.python_records):.1%} of the reference's records)")
    for f in st.failures:
        print("FAIL", f)
    print(f"{len(st.failures)} failures" if st.failures else "no failures")
    return 1 if st.failures else 0


if __name__ == "__main__":
    sys.exit(main())
