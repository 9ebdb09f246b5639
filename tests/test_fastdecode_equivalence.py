"""The C fast path (collectors/_fastdecode.c) against the reference decoder (collectors/decode.py).

Contract: for every frame the C path does not decline, its PacketRecord equals (==) the
reference decoder's; the common case is actually taken; decode_pcap walks pcap records exactly
as collectors.capture.PcapReader does; nothing leaks.

The frames come from the builder in bench/fuzz_decoder.py, drawn here through hypothesis (so
failures shrink) and there through random.Random (the million-frame fuzz, of which
test_fuzz_200k runs a seeded 200k-frame share).
"""

from __future__ import annotations

import gc
import importlib.util
import io
import itertools
import random
import re
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors import capture
from collectors.capture import PCAP_MAGICS, PcapReader, open_capture
from collectors.decode import SUPPORTED_LINKTYPES, Decoder, PayloadPolicy
from collectors.source import capture_batches
from schemas.records import PacketRecord

try:
    from collectors import _fastdecode as fd
except ImportError as _exc:  # every test fails with this, rather than the whole session
    fd = None
    _IMPORT_ERROR = str(_exc)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"

# bench/ is not a package: load the fuzz script (and its frame builder) from its path.
_spec = importlib.util.spec_from_file_location("_bench_fuzz_decoder", ROOT / "bench" / "fuzz_decoder.py")
fz = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fz  # dataclasses look their module up there
_spec.loader.exec_module(fz)

HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TS = 1_700_000_000_123_456_789


@pytest.fixture(autouse=True)
def _extension_built():
    if fd is None:
        pytest.fail(f"collectors._fastdecode is not built ({_IMPORT_ERROR}): "
                    "pip install -e . or build_ext --inplace", pytrace=False)


def config(lt: int, pol: PayloadPolicy = PayloadPolicy(), big_endian: bool = False, ts_scale: int = 1000):
    return fd.Config(PacketRecord, pol.max_bytes, pol.port_bitmap(), big_endian, ts_scale, lt)


# -- hypothesis strategies over the shared builder -------------------------------------------

class DrawChooser:
    """The builder's choices as hypothesis draws; every choice shrinks to the plain case."""

    def __init__(self, draw):
        self.draw = draw

    def int(self, lo, hi):
        return self.draw(st.integers(lo, hi))

    def choice(self, seq):
        return self.draw(st.sampled_from(seq))

    def bytes(self, n):
        return self.draw(st.binary(min_size=n, max_size=n))

    def chance(self, p):
        return self.draw(st.integers(0, 999)) >= 1000 - round(p * 1000)


@st.composite
def cases(draw, clean=False, lt=None):
    return fz.build_case(DrawChooser(draw), clean, lt)


@st.composite
def vxlan_cases(draw, clean=False):
    return fz.build_vxlan_case(DrawChooser(draw), clean)


PORT_SETS = st.one_of(st.none(), st.frozensets(st.sampled_from(fz.PORTS + (7, 9, 12345)), max_size=4))
policies = st.builds(PayloadPolicy, st.sampled_from((0, 1, 8, 64, 100_000)), PORT_SETS)
sane_policies = st.builds(PayloadPolicy, st.sampled_from((0, 1, 8, 64, 100_000)), PORT_SETS)


def _where(lt, frame):
    return f"linktype {lt} frame {frame.hex()}"


# -- decode_frame / decode_vxlan ---------------------------------------------------------------

@settings(max_examples=2500, **HYP)
@given(case=cases(), pol=policies)
def test_decode_frame_equals_reference_or_declines(case, pol):
    lt, frame = case
    r_c = fd.decode_frame(config(lt, pol), frame, TS)
    r_py = Decoder(payload=pol).decode(frame, lt, TS)
    assert r_c is None or r_c == r_py, _where(lt, frame)


@settings(max_examples=800, **HYP)
@given(case=cases(clean=True), pol=sane_policies)
def test_common_case_is_taken(case, pol):
    """Frames inside the documented coverage are never declined."""
    lt, frame = case
    r_c = fd.decode_frame(config(lt, pol), frame, TS)
    r_py = Decoder(payload=pol).decode(frame, lt, TS)
    assert r_py is not None and not r_py.truncated, _where(lt, frame)
    assert r_c is not None, "declined: " + _where(lt, frame)
    assert r_c == r_py, _where(lt, frame)


@settings(max_examples=800, **HYP)
@given(case=vxlan_cases(), pol=policies, ts=st.integers(0, 2**64))
def test_decode_vxlan_equals_reference_or_declines(case, pol, ts):
    data, outer_src = case
    r_c = fd.decode_vxlan(config(1, pol), data, outer_src, ts)
    r_py = Decoder(payload=pol).decode_vxlan(data, outer_src, ts)
    assert r_c is None or r_c == r_py, f"data {data.hex()} outer_src {outer_src.hex()}"


@settings(max_examples=300, **HYP)
@given(case=vxlan_cases(clean=True), pol=sane_policies)
def test_decode_vxlan_common_case_is_taken(case, pol):
    data, outer_src = case
    r_c = fd.decode_vxlan(config(1, pol), data, outer_src, TS)
    r_py = Decoder(payload=pol).decode_vxlan(data, outer_src, TS)
    assert r_c is not None and r_c == r_py, f"data {data.hex()} outer_src {outer_src.hex()}"


@settings(max_examples=300, **HYP)
@given(lt=st.sampled_from(fz.LINKTYPES), frame=st.binary(max_size=120), pol=policies)
def test_random_bytes(lt, frame, pol):
    r_c = fd.decode_frame(config(lt, pol), frame, TS)
    assert r_c is None or r_c == Decoder(payload=pol).decode(frame, lt, TS), _where(lt, frame)


# -- hand-built common frames: never declined ---------------------------------------------------

MAC = bytes.fromhex("0200000000010200000000020800")
M_SRC, IN_SRC, IN_DST = bytes([10, 0, 0, 9]), bytes([10, 0, 0, 9]), bytes([93, 184, 216, 34])
V6_SRC = bytes.fromhex("20010db8000000000000000000000001")
V6_DST = bytes.fromhex("20010db8000000000000000000000002")
HTTP = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def _ip4(proto, body, src, dst):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0x4000, 64, proto, 0, src, dst) + body


def _ip6(proto, body, src, dst):
    return struct.pack("!IHBB16s16s", 0x60000000, len(body), proto, 64, src, dst) + body


def _tcp(sport, dport, payload, flags=0x18):
    return struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, 0x50, flags, 65535, 0, 0) + payload


def _udp(sport, dport, payload):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _vxlan(inner_frame, vni=5569041, sport=50000):
    return _ip4(17, _udp(sport, 4789, struct.pack("!II", 0x08000000, vni << 8) + inner_frame), M_SRC,
                bytes([10, 0, 0, 100]))


COMMON = {
    "ethernet_ipv4_tcp": MAC + _ip4(6, _tcp(51000, 80, HTTP), IN_SRC, IN_DST),
    "ethernet_ipv6_tcp": MAC[:12] + b"\x86\xdd" + _ip6(6, _tcp(51000, 80, HTTP), V6_SRC, V6_DST),
    "vxlan_tcp_egress": MAC + _vxlan(MAC + _ip4(6, _tcp(51000, 80, HTTP), IN_SRC, IN_DST)),
    "vxlan_udp_ingress": MAC + _vxlan(MAC + _ip4(17, _udp(53, 40000, b"\x12\x34" + bytes(30)), IN_DST, IN_SRC)),
    "vxlan_vlan_ipv6_tcp": MAC + _vxlan(MAC[:12] + b"\x81\x00\x00\x07\x86\xdd" +
                                        _ip6(6, _tcp(443, 51000, b"x" * 100, 0x10), V6_SRC, V6_DST)),
}


@pytest.mark.parametrize("name", sorted(COMMON))
@pytest.mark.parametrize("pol", [PayloadPolicy(), PayloadPolicy(16, frozenset({80, 53})), PayloadPolicy(4096, None)],
                         ids=["no-payload", "16-on-80-53", "all"])
def test_common_frames_are_not_declined(name, pol):
    frame = COMMON[name]
    r_c = fd.decode_frame(config(1, pol), frame, TS)
    r_py = Decoder(payload=pol).decode(frame, 1, TS)
    assert r_c is not None
    assert r_c == r_py
    if name.startswith("vxlan"):
        assert r_c.vni == 5569041 and r_c.mirror_src == M_SRC
        assert r_c.direction == {"vxlan_tcp_egress": "egress", "vxlan_udp_ingress": "ingress"}.get(name)
    else:
        assert r_c.vni is None and r_c.mirror_src is None and r_c.direction is None
    # The direction strings are the interned ones.
    if r_c.direction is not None:
        assert r_c.direction is sys.intern(r_c.direction)
    # decode_vxlan on the same datagram as a socket receives it (the outer UDP payload).
    if name.startswith("vxlan"):
        data = frame[14 + 20 + 8:]
        v_c = fd.decode_vxlan(config(1, pol), data, M_SRC, TS)
        assert v_c is not None and v_c == Decoder(payload=pol).decode_vxlan(data, M_SRC, TS) == r_c


def test_buffer_types_and_argument_errors():
    frame = COMMON["vxlan_tcp_egress"]
    cfg = config(1)
    ref = fd.decode_frame(cfg, frame, TS)
    assert fd.decode_frame(cfg, bytearray(frame), TS) == ref
    assert fd.decode_frame(cfg, memoryview(frame), TS) == ref
    # decode_vxlan keeps outer_src itself in the record: only bytes are taken.
    assert fd.decode_vxlan(cfg, frame[42:], bytearray(M_SRC), TS) is None
    with pytest.raises(TypeError):
        fd.decode_frame(object(), frame, TS)
    with pytest.raises(TypeError):
        fd.decode_frame(cfg, "text", TS)
    with pytest.raises(TypeError):
        fd.decode_frame(cfg, frame)
    with pytest.raises(TypeError):
        fd.decode_pcap(cfg, 12)
    with pytest.raises(ValueError):
        fd.Config(PacketRecord, 0, b"\xff" * 100, False, 1000, 1)
    with pytest.raises(ValueError):
        fd.Config(PacketRecord, 0, b"\xff" * 8192, False, -1, 1)
    with pytest.raises(TypeError):
        fd.Config(None, 0, b"\xff" * 8192, False, 1000, 1)
    c = fd.Config(PacketRecord, 1 << 70, b"\xff" * 8192, True, 1, 276)
    assert (c.record_type, c.big_endian, c.ts_scale, c.linktype) == (PacketRecord, True, 1, 276)
    # A payload limit past 64 bits still never disagrees (negative ones are refused by
    # PayloadPolicy itself).
    for pol in (PayloadPolicy(1 << 70),):
        r_c = fd.decode_frame(config(1, pol), frame, TS)
        assert r_c is None or r_c == Decoder(payload=pol).decode(frame, 1, TS)
    assert fd.decode_frame(config(1, PayloadPolicy(1 << 70)), frame, TS).payload == HTTP


def test_unsupported_linktype_declines():
    assert fd.decode_frame(config(9), COMMON["ethernet_ipv4_tcp"], TS) is None


# -- decode_pcap ------------------------------------------------------------------------------

def _pcap_records(frames, big_endian, stamps):
    e = ">" if big_endian else "<"
    return b"".join(struct.pack(e + "IIII", sec, frac, len(f), len(f) + extra) + f
                    for f, (sec, frac, extra) in zip(frames, stamps))


def _check_items(items, expected, lt, pol):
    assert len(items) == len(expected)
    dec = Decoder(payload=pol)
    for it, (ts, frame) in zip(items, expected):
        if type(it) is tuple:
            assert len(it) == 2 and type(it[0]) is int and type(it[1]) is bytes
            assert it == (ts, frame)
        else:
            assert type(it) is PacketRecord
            assert it == dec.decode(frame, lt, ts), _where(lt, frame)


@settings(max_examples=300, **HYP)
@given(data=st.data())
def test_decode_pcap_walks_records_like_the_reader(data):
    lt = data.draw(st.sampled_from(fz.LINKTYPES), label="linktype")
    big = data.draw(st.booleans(), label="big_endian")
    scale = data.draw(st.sampled_from((1, 1000)), label="ts_scale")
    pol = data.draw(policies, label="policy")
    frames = [c[1] for c in data.draw(st.lists(cases(lt=lt), max_size=6), label="frames")]
    stamps = data.draw(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                                          st.integers(0, 100)),
                                min_size=len(frames), max_size=len(frames)), label="stamps")
    buf = bytearray(_pcap_records(frames, big, stamps))
    if frames and data.draw(st.booleans(), label="corrupt"):
        k = data.draw(st.integers(0, len(frames) - 1), label="corrupt record")
        off = sum(16 + len(f) for f in frames[:k])
        bad = data.draw(st.sampled_from((capture.MAX_RECORD + 1, 0xFFFFFFFF, 0x80000000)))
        buf[off + 8:off + 12] = struct.pack(">I" if big else "<I", bad)
    if data.draw(st.booleans(), label="cut"):
        buf = buf[:data.draw(st.integers(0, len(buf)), label="cut at")]
    buf = bytes(buf)

    cfg = config(lt, pol, big, scale)
    items, pos, nframes, nbytes = fd.decode_pcap(cfg, buf)
    # The count of declined frames is what lets a caller skip its resolve pass.
    assert cfg.declined == sum(1 for it in items if type(it) is tuple)
    expected, exp_pos, corrupt = fz.pcap_walk(buf, big, scale)
    _check_items(items, expected, lt, pol)
    assert pos == (-exp_pos - 1 if corrupt else exp_pos)
    assert nframes == len(expected)
    assert nbytes == sum(len(f) for _, f in expected)


def test_decode_pcap_record_size_limit():
    big = bytes(capture.MAX_RECORD)
    cfg = config(1)
    buf = _pcap_records([big], False, [(1, 2, 0)])
    items, pos, nframes, nbytes = fd.decode_pcap(cfg, buf)
    assert (len(items), pos, nframes, nbytes) == (1, len(buf), 1, capture.MAX_RECORD)
    assert items[0] == (1_000_002_000, big)
    bad = struct.pack("<IIII", 1, 2, capture.MAX_RECORD + 1, 0)
    ok = _pcap_records([COMMON["ethernet_ipv4_tcp"]], False, [(1, 2, 0)])
    items, pos, nframes, nbytes = fd.decode_pcap(cfg, ok + bad)
    assert len(items) == 1 and type(items[0]) is PacketRecord
    assert (pos, nframes) == (-len(ok) - 1, 1)
    # Only a header's worth: the corrupt length is seen before its bytes arrive, as the reader does.
    assert fd.decode_pcap(cfg, bad[:16])[1] == -1
    assert fd.decode_pcap(cfg, bad[:15])[1:] == (0, 0, 0)
    assert fd.decode_pcap(cfg, b"")[1:] == (0, 0, 0)


def _corpus_pcaps():
    out = []
    for p in sorted(CORPUS.rglob("*.pcap")) if CORPUS.is_dir() else []:
        with open(p, "rb") as f:
            head = f.read(24)
        if head[:4] not in PCAP_MAGICS or len(head) < 24:
            continue
        lt = struct.unpack((">" if head[:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d") else "<") + "I",
                           head[20:24])[0] & 0x0FFFFFFF
        if lt in SUPPORTED_LINKTYPES:
            out.append(p)
    return out


CORPUS_PCAPS = _corpus_pcaps()


def _both(path_or_reader_factory, pol=PayloadPolicy()):
    """(records, stats) through the C path and through the reference, same input."""
    out = []
    for fast in (True, False):
        r = path_or_reader_factory()
        recs = list(itertools.chain.from_iterable(capture_batches(r, Decoder(payload=pol), fast=fast)))
        out.append((recs, r.stats))
    return out


def test_corpus_is_there():
    assert len(CORPUS_PCAPS) >= 10, f"capture corpus not found under {CORPUS}"


@pytest.mark.parametrize("path", CORPUS_PCAPS, ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_pcap_fast_equals_reference(path):
    for pol in (PayloadPolicy(), PayloadPolicy(256, None)):
        (fast, fs), (slow, ss) = _both(lambda: open_capture(path), pol)
        assert fast == slow
        assert fs.frames == ss.frames and fs.bytes == ss.bytes
        assert fs.problems == ss.problems


def _pcap_file(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    return data[:24], data[24:]


def _mem_reader(head: bytes, body: bytes):
    return lambda: PcapReader(io.BytesIO(body), "mem.pcap", head)


def test_records_across_chunk_boundaries(monkeypatch):
    head, body = _pcap_file(CORPUS / "sv__vxlan-decoder-03__vxlan.pcap")
    monkeypatch.setattr(capture, "CHUNK", 1000)  # records straddle every chunk boundary
    (fast, fs), (slow, ss) = _both(_mem_reader(head, body), PayloadPolicy(64, None))
    assert len(fast) == 100 and fast == slow
    assert (fs.frames, fs.bytes, fs.problems) == (ss.frames, ss.bytes, ss.problems)


def test_pcap_cut_inside_a_record():
    head, body = _pcap_file(CORPUS / "zeek__vxlan-encapsulated-http.pcap")
    for cut in (len(body) - 1, len(body) - 600, 16 + 5, 7):
        (fast, fs), (slow, ss) = _both(_mem_reader(head, body[:cut]))
        assert fast == slow
        assert fs.frames == ss.frames and fs.bytes == ss.bytes
        assert len(fs.problems) == 1 and fs.problems == ss.problems
        assert "ends inside a record" in fs.problems[0]


def test_pcap_corrupt_record_length():
    head, body = _pcap_file(CORPUS / "zeek__vxlan-encapsulated-http.pcap")
    # The 5th record's caplen becomes huge.
    pos = 0
    for _ in range(4):
        pos += 16 + struct.unpack_from("<I", body, pos + 8)[0]
    bad = bytearray(body)
    bad[pos + 8:pos + 12] = struct.pack("<I", 0x7FFFFFFF)
    (fast, fs), (slow, ss) = _both(_mem_reader(head, bytes(bad)))
    assert len(fast) == 4 and fast == slow
    assert fs.frames == ss.frames == 4 and fs.bytes == ss.bytes
    assert len(fs.problems) == len(ss.problems) == 1
    assert "corrupt record header" in fs.problems[0] and "corrupt record header" in ss.problems[0]


@pytest.mark.parametrize("big_endian,scale", [(True, 1), (True, 1000), (False, 1)])
def test_other_pcap_byte_orders_and_resolutions(big_endian, scale):
    """Rewrite a corpus file as big-endian and/or nanosecond pcap: same records as the reference."""
    head, body = _pcap_file(CORPUS / "sv__vxlan-decoder-03__vxlan.pcap")
    e = ">" if big_endian else "<"
    magic = {(False, 1000): b"\xd4\xc3\xb2\xa1", (True, 1000): b"\xa1\xb2\xc3\xd4",
             (False, 1): b"\x4d\x3c\xb2\xa1", (True, 1): b"\xa1\xb2\x3c\x4d"}[(big_endian, scale)]
    fields = struct.unpack("<HHiIII", head[4:])
    new_head = magic + struct.pack(e + "HHiIII", *fields)
    out, pos = bytearray(), 0
    while pos < len(body):
        sec, frac, caplen, orig = struct.unpack_from("<IIII", body, pos)
        out += struct.pack(e + "IIII", sec, frac * (1000 if scale == 1 else 1), caplen, orig)
        out += body[pos + 16:pos + 16 + caplen]
        pos += 16 + caplen
    (fast, fs), (slow, ss) = _both(_mem_reader(new_head, bytes(out)))
    assert len(fast) == 100 and fast == slow and fs.frames == ss.frames
    orig_recs = list(itertools.chain.from_iterable(
        capture_batches(open_capture(CORPUS / "sv__vxlan-decoder-03__vxlan.pcap"), Decoder())))
    assert [r.ts_ns for r in fast] == [r.ts_ns for r in orig_recs]


@pytest.mark.parametrize("lt", fz.LINKTYPES)
def test_synthetic_pcap_per_linktype(lt):
    """Every link type through decode_pcap and capture_batches, declines included."""
    c = fz.RandomChooser(random.Random(lt))
    frames = [fz.build_case(c, clean=(i % 2 == 0), lt=lt)[1] for i in range(400)]
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, lt)
    body = _pcap_records(frames, False, [(1_600_000_000 + i, i, 0) for i in range(len(frames))])
    (fast, fs), (slow, ss) = _both(_mem_reader(head, body), PayloadPolicy(32, frozenset({80, 443})))
    assert fast == slow and fs.frames == ss.frames == 400
    assert len(fast) >= 200


# -- the million-frame fuzz, at 200k --------------------------------------------------------------

def test_fuzz_200k():
    """bench/fuzz_decoder.py at 200k frames, seeded. In a subprocess: half of its frames sit at
    the end of readable memory, so a read out of bounds is a crash, reported here as a failure."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz_decoder.py"), "200000",
                           "--seed", "20240611", "--corpus", str(CORPUS)],
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{out[-6000:]}"
    assert "no failures" in out
    taken = int(re.search(r"C path took ([\d,]+)", out).group(1).replace(",", ""))
    frames = int(re.search(r"^([\d,]+) frames", out, re.M).group(1).replace(",", ""))
    assert frames >= 200_000 and taken > 0.3 * frames, out  # the fast path takes the common case


def test_guard_page_catches_reads_past_the_end():
    """The fuzz's guarded buffer really ends at an unreadable page."""
    code = ("import sys, ctypes; sys.path.insert(0, sys.argv[1]); import fuzz_decoder as f; "
            "g = f.GuardedBuffer(); mv = g.place(b'abc'); assert bytes(mv) == b'abc'; "
            "print('placed', flush=True); ctypes.string_at(g.address + g.span, 1)")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "bench")], capture_output=True,
                          text=True, timeout=60)
    assert "placed" in proc.stdout and proc.returncode < 0, (proc.returncode, proc.stdout, proc.stderr)


# -- references and memory ------------------------------------------------------------------

def test_no_leaks():
    c = fz.RandomChooser(random.Random(7))
    cases_ = [fz.build_case(c, clean=(i % 3 == 0)) for i in range(600)]
    vx = [fz.build_vxlan_case(c, clean=(i % 2 == 0)) for i in range(100)]
    pol = PayloadPolicy(64, frozenset({80, 443, 53}))
    cfgs = {lt: config(lt, pol) for lt in fz.LINKTYPES}
    pcap_buf = _pcap_records([COMMON[k] for k in sorted(COMMON)] * 20 + [b"\x00" * 30], False,
                             [(i, i, 0) for i in range(101)])
    pcap_buf += b"\x00" * 10  # a partial record header at the end
    decode_frame, decode_vxlan, decode_pcap = fd.decode_frame, fd.decode_vxlan, fd.decode_pcap

    def run(n):
        taken = 0
        for i in range(n):
            lt, frame = cases_[i % 600]
            taken += decode_frame(cfgs[lt], frame, TS + i) is not None
            if i % 8 == 0:
                data, osrc = vx[i % 100]
                decode_vxlan(cfgs[1], data, osrc, TS + i)
            if i % 1000 == 0:
                decode_pcap(cfgs[1], pcap_buf)
        return taken

    run(5000)  # fill the module's caches
    watched = [None, False, True, PacketRecord, sys.intern("egress"), sys.intern("ingress"),
               cfgs[1], cases_[0][1], vx[0][1]]
    gc.collect()
    refs = [sys.getrefcount(o) for o in watched]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        taken = run(200_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert taken > 50_000
    assert grown < 256 * 1024, f"{grown} bytes more after 200k decodes"
    after = [sys.getrefcount(o) for o in watched]
    for o, a, b in zip(watched, refs, after):
        assert abs(b - a) < 100, f"refcount of {o!r} went from {a} to {b}"


def test_payload_policy_rejects_impossible_values():
    with pytest.raises(ValueError, match="max_bytes"):
        PayloadPolicy(-1)
    with pytest.raises(ValueError, match="ports"):
        PayloadPolicy(10, frozenset({70000}))
