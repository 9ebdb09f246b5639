"""Streaming readers for pcap and pcapng captures, plain or gzip-compressed.

A reader never loads a file whole: it reads fixed-size chunks, so memory stays flat however
large the capture. Problems inside a file (a record cut short at the end, a corrupt record
header) stop that file with a counted, described ``problem``; problems that make a file
unreadable from the start raise CaptureError with a message for the user.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20
# No real link-layer frame is this large; a bigger record length means a corrupt file.
MAX_RECORD = 1 << 18

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

# Names for the link types people meet, so an unsupported one is named in the message.
LINKTYPE_NAMES = {
    0: "BSD null/loopback", 1: "Ethernet", 6: "IEEE 802.5 Token Ring", 8: "SLIP", 9: "PPP",
    10: "FDDI", 12: "raw IP", 14: "raw IP", 50: "PPP in HDLC framing", 51: "PPPoE", 101: "raw IP",
    104: "Cisco HDLC", 105: "IEEE 802.11", 108: "OpenBSD loopback", 113: "Linux cooked v1",
    119: "Prism 802.11", 127: "802.11 radiotap", 147: "user-defined (147)", 192: "PPI",
    195: "IEEE 802.15.4", 201: "Bluetooth HCI H4", 220: "USB Linux mmapped", 228: "raw IPv4",
    229: "raw IPv6", 249: "netlink", 276: "Linux cooked v2",
}


def linktype_name(lt: int) -> str:
    return f"{LINKTYPE_NAMES.get(lt, 'unknown')} (link type {lt})"


class CaptureError(Exception):
    """A capture that cannot be read at all; the message is meant for the user."""


@dataclass
class ReadStats:
    frames: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    linktypes: set[int] = field(default_factory=set)
    skipped_blocks: int = 0
    """pcapng packet blocks that could not be read (an undefined interface): skipped, counted."""


class _Reader:
    """What both formats share: the open file, its size, and how far reading has got
    (in bytes of the file on disk, so progress works for gzip too)."""

    def __init__(self, f: BinaryIO, name: str):
        self.f, self.name = f, name
        self._raw = getattr(f, "fileobj", None) or f  # gzip reads through to this one
        try:
            self.size = Path(name).stat().st_size
        except OSError:
            self.size = 0

    def _safe_read(self, n: int, one: bool = False) -> bytes:
        """Read (``one``: what one underlying read gives, at most n); damaged compressed data
        ends the file with a described problem."""
        try:
            return self.f.read1(n) if one else self.f.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            self._damaged(exc)
            return b""

    def readinto(self, view) -> int:
        """Read into a buffer what one underlying read gives: a damaged gzip stream then
        raises only after every byte decompressed before the damage was returned (a full
        read of 1 MiB raised with up to that much decompressed and lost); a FIFO's data
        comes as it arrives."""
        try:
            return self.f.readinto1(view)
        except (OSError, EOFError, zlib.error) as exc:
            self._damaged(exc)
            return 0

    def _damaged(self, exc: BaseException) -> None:
        self.stats.problems.append(f"{self.name}: damaged compressed data ({exc}); the rest was skipped")

    def position(self) -> int:
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self.f.close()
        if self._raw is not self.f:  # GzipFile leaves a file object it was given open
            self._raw.close()


class PcapReader(_Reader):
    """Classic libpcap format. ``frames()`` yields (ts_ns, linktype, orig_len, frame);
    ``chunks()`` yields buffers for the C fast path, which walks the records itself."""

    format = "pcap"

    def __init__(self, f: BinaryIO, name: str, header: bytes):
        super().__init__(f, name)
        endian, self.ts_scale = PCAP_MAGICS[header[:4]]
        self.big_endian = endian == ">"
        _, _, _, _, self.snaplen, lt = struct.unpack(endian + "HHiIII", header[4:24])
        self.linktype = lt & 0x0FFFFFFF  # the top bits may carry FCS information
        self._rec = struct.Struct(endian + "IIII")
        self.stats = ReadStats(linktypes={self.linktype})

    def chunks(self) -> Iterator[bytes]:
        """Raw chunks of the record area, in order; the consumer carries partial records."""
        while True:
            data = self._safe_read(CHUNK, one=True)
            if not data:
                return
            yield data

    def frames(self) -> Iterator[tuple[int, int, int, bytes]]:
        rec = self._rec
        lt, scale = self.linktype, self.ts_scale
        buf = b""
        pos = 0
        for data in self.chunks():
            buf = buf[pos:] + data if pos < len(buf) else data
            pos = 0
            n = len(buf)
            while n - pos >= 16:
                sec, frac, caplen, origlen = rec.unpack_from(buf, pos)
                if caplen > MAX_RECORD:
                    self.corrupt(pos, caplen)
                    return
                end = pos + 16 + caplen
                if end > n:
                    break
                self.stats.frames += 1
                self.stats.bytes += caplen
                yield (sec * 1_000_000_000 + frac * scale, lt, origlen, buf[pos + 16:end])
                pos = end
        if pos < len(buf):
            self.cut_short(len(buf) - pos)

    def corrupt(self, offset: int, caplen: int) -> None:
        self.stats.problems.append(
            f"{self.name}: corrupt record header (length {caplen}) after {self.stats.frames} frames; "
            "the rest of the file was skipped")

    def cut_short(self, nbytes: int) -> None:
        self.stats.problems.append(
            f"{self.name}: file ends inside a record ({nbytes} bytes left over after "
            f"{self.stats.frames} frames); the partial record was skipped")


class PcapngReader(_Reader):
    """pcapng: sections, interfaces (each with its own link type and time resolution),
    enhanced, simple and obsolete packet blocks; other blocks are skipped."""

    format = "pcapng"

    def __init__(self, f: BinaryIO, name: str, first4: bytes):
        super().__init__(f, name)
        self._pending = first4
        self.stats = ReadStats()

    def _read(self, n: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            if len(data) < n:
                data += self._safe_read(n - len(data))
            return data
        return self._safe_read(n)

    def frames(self) -> Iterator[tuple[int, int, int, bytes]]:
        e = "<"
        ifaces: list[tuple[int, int, int]] = []  # (linktype, ts numerator ns, ts divisor)
        while True:
            head = self._read(8)
            if not head:
                return
            if len(head) < 8:
                self.cut_short(len(head))
                return
            btype = struct.unpack(e + "I", head[:4])[0]
            if head[:4] == PCAPNG_MAGIC:
                # Section header: its byte-order magic decides how everything after it reads.
                bom = self._read(4)
                if len(bom) < 4:
                    self.cut_short(len(bom) + 8)
                    return
                e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
                if not e:
                    self.stats.problems.append(f"{self.name}: bad pcapng byte-order magic {bom.hex()}")
                    return
                blen = struct.unpack(e + "I", head[4:8])[0]
                body_len = blen - 12
                ifaces = []
                if blen < 28 or blen % 4 or blen > MAX_RECORD:
                    self.corrupt(blen)
                    return
                body = self._read(body_len)
                if len(body) < body_len:
                    self.cut_short(len(body))
                    return
                continue
            blen = struct.unpack(e + "I", head[4:8])[0]
            if blen < 12 or blen % 4 or blen > MAX_RECORD:
                self.corrupt(blen)
                return
            body = self._read(blen - 8)
            if len(body) < blen - 8:
                self.cut_short(len(body))
                return
            body = body[:-4]  # trailing block length
            if btype == 1:  # interface description
                lt = struct.unpack(e + "H", body[:2])[0]
                ifaces.append((lt, *_tsresol(body[8:], e)))
                self.stats.linktypes.add(lt)
            elif btype == 6 or btype == 2:  # enhanced / obsolete packet
                if len(body) < 20:
                    self.corrupt(blen)
                    return
                if btype == 6:
                    iface, hi, lo, caplen, origlen = struct.unpack(e + "IIIII", body[:20])
                else:
                    iface, _, hi, lo, caplen, origlen = struct.unpack(e + "HHIIII", body[:20])
                if caplen > len(body) - 20:
                    self.corrupt(blen)
                    return
                if iface >= len(ifaces):
                    # One bad block is no reason to stop the file: the block's length is
                    # sound, so skip it, count it and go on.
                    self.stats.skipped_blocks += 1
                    if self.stats.skipped_blocks == 1:
                        self.stats.problems.append(
                            f"{self.name}: a packet block names interface {iface}, which the "
                            f"section does not define (after {self.stats.frames} frames); such "
                            "blocks are skipped and counted in skipped_blocks")
                    continue
                lt, num, div = ifaces[iface]
                ts = (hi << 32) | lo
                self.stats.frames += 1
                self.stats.bytes += caplen
                yield (ts * num // div, lt, origlen, body[20:20 + caplen])
            elif btype == 3:  # simple packet: interface 0, no timestamp
                if not ifaces or len(body) < 4:
                    self.corrupt(blen)
                    return
                origlen = struct.unpack(e + "I", body[:4])[0]
                data = body[4:4 + origlen]
                self.stats.frames += 1
                self.stats.bytes += len(data)
                yield (0, ifaces[0][0], origlen, data)

    def corrupt(self, blen: int) -> None:
        self.stats.problems.append(
            f"{self.name}: corrupt pcapng block (length {blen}) after {self.stats.frames} frames; "
            "the rest of the file was skipped")

    def cut_short(self, nbytes: int) -> None:
        self.stats.problems.append(
            f"{self.name}: file ends inside a block ({nbytes} bytes left over after "
            f"{self.stats.frames} frames); the partial block was skipped")


def _tsresol(options: bytes, e: str) -> tuple[int, int]:
    """An interface's timestamp unit as (multiplier to ns, divisor); default microseconds."""
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(e + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = options[pos + 4]
            if v & 0x80:  # a power of two
                return 1_000_000_000, 1 << (v & 0x7F)
            exp = v & 0x7F
            return (10 ** (9 - exp), 1) if exp <= 9 else (1, 10 ** (exp - 9))
        pos += 4 + ((length + 3) & ~3)
    return 1_000, 1


class _Prefixed:
    """A binary file with bytes already read from it put back in front (for GzipFile)."""

    def __init__(self, head: bytes, f: BinaryIO):
        self._head = head
        self._f = f

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._f.read(n)
        if n is None or n < 0:
            data, self._head = self._head + self._f.read(), b""
            return data
        data, self._head = self._head[:n], self._head[n:]
        if len(data) < n:
            data += self._f.read(n - len(data))
        return data

    def tell(self) -> int:
        return self._f.tell() - len(self._head)

    def close(self) -> None:
        self._f.close()


def open_capture(path: str | Path) -> PcapReader | PcapngReader:
    """Open a pcap or pcapng file, gzip-compressed or not. Raises CaptureError with a
    user-facing message for a missing, unreadable or unknown-format file."""
    p = Path(path)
    if not p.exists():
        raise CaptureError(f"{p}: no such file")
    if p.is_dir():
        raise CaptureError(f"{p}: is a directory, not a capture file")
    try:
        f: BinaryIO = open(p, "rb")
    except OSError as exc:
        raise CaptureError(f"{p}: cannot open: {exc.strerror}") from exc
    try:
        magic = f.read(4)
        if magic[:2] == GZIP_MAGIC:
            # Decompress the stream already open, its first bytes put back: opening the path
            # again hung on a FIFO and read an empty /dev/stdin.
            f = gzip.GzipFile(fileobj=_Prefixed(magic, f), mode="rb")  # type: ignore[assignment]
            try:
                magic = f.read(4)
            except (OSError, EOFError, zlib.error) as exc:
                raise CaptureError(f"{p}: damaged gzip data: {exc}") from exc
        if magic in PCAP_MAGICS:
            rest = f.read(20)
            if len(rest) < 20:
                raise CaptureError(f"{p}: pcap file too short for its global header")
            return PcapReader(f, str(p), magic + rest)
        if magic == PCAPNG_MAGIC:
            return PcapngReader(f, str(p), magic)
        raise CaptureError(
            f"{p}: unknown format (starts with {magic.hex() or 'nothing'}); "
            "expected pcap or pcapng, optionally gzip-compressed")
    except CaptureError:
        f.close()
        raise
