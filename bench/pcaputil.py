#!/usr/bin/env python3
"""Tiny stdlib-only helpers for classic pcap files (what tcpdump -w writes).

    python3 bench/pcaputil.py count FILE          -> prints the number of whole records
    python3 bench/pcaputil.py count FILE STATE    -> the same, resuming from (and updating) STATE,
                                                     a small file holding "count offset": cheap
                                                     progress checks on a file tcpdump is writing
    python3 bench/pcaputil.py prefix SRC DST N    -> copies the first N records of SRC to DST

Both stream the file record by record (headers are read, payloads are skipped or copied), so they
work on captures of any size and on a file that tcpdump is still writing (a torn last record is
ignored). pcapng is not supported: tcpdump and the mirror lab write classic pcap.
"""
from __future__ import annotations

import struct
import sys

_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",  # microsecond, little endian
    b"\xa1\xb2\xc3\xd4": ">",  # microsecond, big endian
    b"\x4d\x3c\xb2\xa1": "<",  # nanosecond, little endian
    b"\xa1\xb2\x3c\x4d": ">",  # nanosecond, big endian
}
GLOBAL_HEADER_LEN = 24
RECORD_HEADER_LEN = 16


class PcapFormatError(ValueError):
    pass


def _open_header(f) -> tuple[bytes, str]:
    head = f.read(GLOBAL_HEADER_LEN)
    if len(head) < GLOBAL_HEADER_LEN:
        raise PcapFormatError("file too short for a pcap global header")
    endian = _MAGICS.get(head[:4])
    if endian is None:
        if head[:4] == b"\x0a\x0d\x0d\x0a":
            raise PcapFormatError("pcapng is not supported; write classic pcap (tcpdump -w does)")
        raise PcapFormatError(f"not a pcap file (magic {head[:4].hex()})")
    return head, endian


def count_packets(path: str, start: tuple[int, int] | None = None) -> int:
    """Number of whole records in a classic pcap file (streams; never loads the file)."""
    return count_packets_from(path, start)[0]


def count_packets_from(path: str, start: tuple[int, int] | None = None) -> tuple[int, int]:
    """Count whole records, resuming from start=(count, offset) of an earlier call on the same
    growing file; returns (count, offset just past the last whole record)."""
    with open(path, "rb", buffering=1 << 20) as f:
        _, endian = _open_header(f)
        size = f.seek(0, 2)
        n, pos = start if start else (0, GLOBAL_HEADER_LEN)
        f.seek(pos)
        unpack = struct.Struct(endian + "IIII").unpack
        while True:
            rh = f.read(RECORD_HEADER_LEN)
            if len(rh) < RECORD_HEADER_LEN:
                break
            end = pos + RECORD_HEADER_LEN + unpack(rh)[2]
            if end > size:
                break  # torn last record (file still being written)
            n += 1
            pos = end
            f.seek(pos)
    return n, pos


def write_prefix(src: str, dst: str, n: int) -> int:
    """Copy the global header and the first n records of src to dst; return records written."""
    written = 0
    with open(src, "rb", buffering=1 << 20) as f, open(dst, "wb", buffering=1 << 20) as out:
        head, endian = _open_header(f)
        out.write(head)
        unpack = struct.Struct(endian + "IIII").unpack
        while written < n:
            rh = f.read(RECORD_HEADER_LEN)
            if len(rh) < RECORD_HEADER_LEN:
                break
            incl_len = unpack(rh)[2]
            data = f.read(incl_len)
            if len(data) < incl_len:
                break
            out.write(rh)
            out.write(data)
            written += 1
    return written


def main(argv: list[str]) -> int:
    if len(argv) in (2, 3) and argv[0] == "count":
        try:
            start = None
            if len(argv) == 3:
                try:
                    with open(argv[2]) as st:
                        c, o = st.read().split()
                        start = (int(c), int(o))
                except (OSError, ValueError):
                    start = None
            n, pos = count_packets_from(argv[1], start)
            if len(argv) == 3:
                with open(argv[2], "w") as st:
                    st.write(f"{n} {pos}\n")
            print(n)
        except (OSError, PcapFormatError) as e:
            print(f"pcaputil: {argv[1]}: {e}", file=sys.stderr)
            return 1
        return 0
    if len(argv) == 4 and argv[0] == "prefix":
        print(write_prefix(argv[1], argv[2], int(argv[3])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
