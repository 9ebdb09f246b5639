"""Capture file -> batches of PacketRecords, through the C fast path where it applies."""

from __future__ import annotations

from collections.abc import Iterator

from collectors.capture import CHUNK, MAX_RECORD, PcapReader, PcapngReader
from collectors.decode import GENEVE_PORT, SUPPORTED_LINKTYPES, VXLAN_PORT, Decoder
from schemas.records import PacketRecord

try:  # the C fast path is an optimisation: the pure-Python decoder gives the same records
    from collectors import _fastdecode
except ImportError:  # pragma: no cover - exercised only where the extension failed to build
    _fastdecode = None

BATCH = 4096


def capture_batches(reader: PcapReader | PcapngReader, decoder: Decoder,
                    fast: bool = True) -> Iterator[list[PacketRecord]]:
    """Decode every frame of a capture; yields lists of records in capture order.
    Every frame is either a record or a drop counted in ``decoder.drops``."""
    # The C path knows the standard tunnel ports only; other settings take the reference path.
    if fast and _fastdecode is not None and isinstance(reader, PcapReader) \
            and reader.linktype in SUPPORTED_LINKTYPES \
            and decoder.vxlan_ports == {VXLAN_PORT} and decoder.geneve_ports == {GENEVE_PORT}:
        yield from _fast_pcap(reader, decoder)
        return
    decode = decoder.decode
    batch: list[PacketRecord] = []
    for ts, lt, _orig, frame in reader.frames():
        r = decode(frame, lt, ts)
        if r is not None:
            batch.append(r)
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _fast_pcap(reader: PcapReader, decoder: Decoder) -> Iterator[list[PacketRecord]]:
    """The C extension walks whole chunks of pcap records; frames it declines come back as
    (ts_ns, frame) for the reference decoder. Reads go into one reused buffer, with the
    partial record at a chunk's end moved to its front (copying chunks cost more than
    decoding them)."""
    cfg = _fastdecode.Config(PacketRecord, decoder.payload.max_bytes, decoder.payload.port_bitmap(),
                             reader.big_endian, reader.ts_scale, reader.linktype)
    decode = decoder.decode
    lt = reader.linktype
    stats = reader.stats
    buf = bytearray(CHUNK + MAX_RECORD + 16)  # a chunk plus the largest partial record
    view = memoryview(buf)
    have = 0
    try:
        while True:
            n = reader.readinto(view[have:have + CHUNK])
            if not n:
                break
            have += n
            before = cfg.declined
            items, pos, nframes, nbytes = _fastdecode.decode_pcap(cfg, view[:have])
            stats.frames += nframes
            stats.bytes += nbytes
            declined = _resolve(items, decode, lt) if cfg.declined != before else 0
            decoder.decoded += nframes - declined
            if pos < 0:  # a corrupt record header: stop this file, as the Python reader does
                at = -pos - 1
                reader.corrupt(at, int.from_bytes(buf[at + 8:at + 12], "big" if reader.big_endian else "little"))
                have = 0
                if items:
                    yield items
                return
            rest = have - pos
            buf[:rest] = buf[pos:have]
            have = rest
            if items:
                yield items
        if have:
            reader.cut_short(have)
    finally:
        view.release()


def _resolve(items: list, decode, lt: int) -> int:
    """Replace, in place, the frames the C path declined with the reference decoder's result
    (dropping those it drops); returns how many were declined."""
    declined = 0
    j = 0
    for it in items:
        if type(it) is tuple:
            declined += 1
            it = decode(it[1], lt, it[0])
            if it is None:
                continue
        items[j] = it
        j += 1
    del items[j:]
    return declined
