"""The flow state format (stream_app/state/codec.py): typed, versioned records that restoring
can never turn into running code.

- State written by the previous release (pickle, version 1; blobs made by its own codec, see
  tests/data/state-v1/make_fixtures.py) is read without general unpickling, and a worker that
  restores it and goes on makes the records that release would have made, the same as an
  uninterrupted run.
- State of this release's format (tests/data/state-v2/) is read: the next release's
  "previous release" test, ready now.
- Snapshot and restore at every batch boundary of the corpus cases changes no record, and a
  restored flow encodes to the very bytes it was restored from.
- A forged blob (no key, another version, a pickle that would write a file, a signed blob of
  the wrong shape) is refused with StateError and nothing runs; arbitrary bytes never raise
  anything else.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from schemas.records import FlowRecord, HttpTransaction
from stream_app.core.l7 import HttpAnalyzer
from stream_app.core.processor import CoreConfig
from stream_app.state.codec import TAG_LEN, VERSION, Codec, StateError
from stream_app.state.partition import Meta, PartitionState
from tests.state_cases import CASES, case_id, partition_logs, records_of

DATA = Path(__file__).parent / "data"
CONFIG = CoreConfig(detect=None)


class Fixture(msgspec.Struct):
    name: str
    cut: int
    meta: bytes
    blobs: dict[bytes, bytes]
    flows: list[FlowRecord]
    http: list[HttpTransaction]


class FixtureFile(msgspec.Struct):
    capture: str
    seed: int
    partitions: list[Fixture]


def load_fixture(version: int, capture: str, seed: int) -> tuple[bytes, FixtureFile]:
    d = DATA / f"state-v{version}"
    body = (d / f"{case_id(capture, seed)}.msgpack").read_bytes()
    return (d / "key.bin").read_bytes(), msgspec.msgpack.decode(body, type=FixtureFile)


def results_from(st: PartitionState, log, start: int) -> tuple[list, list]:
    flows, http = [], []
    for off in range(start, len(log)):
        res = st.apply(off, log[off])
        flows += res.flows
        http += res.http
    return flows, http


_HEALTH = {"handshake_rtt_resp": None, "handshake_rtt_orig": None, "orig_retrans_pkts": None,
           "orig_retrans_bytes": None, "resp_retrans_pkts": None, "resp_retrans_bytes": None,
           "orig_ooo_pkts": None, "resp_ooo_pkts": None, "orig_zero_windows": None,
           "resp_zero_windows": None, "missed_bytes": None}


def _no_health(f: FlowRecord) -> FlowRecord:
    return msgspec.structs.replace(f, app_proto=None, app_proto_source=None, **_HEALTH)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("capture,seed", CASES, ids=[case_id(*c) for c in CASES])
def test_stored_state_of_a_release_is_continued(version, capture, seed):
    """Restore the blobs a release wrote mid-capture, apply the rest of the partition's log:
    the records are the ones that release made after its snapshot, and with the records made
    before it, those of a run that was never interrupted."""
    key, fx = load_fixture(version, capture, seed)
    logs = partition_logs(records_of(capture, seed))
    codec = Codec(key)
    restored_flows = 0
    for part in fx.partitions:
        log = logs[int(part.name.rsplit(":", 1)[1])]
        st = PartitionState.restore(part.name, CONFIG, codec, part.meta, part.blobs)
        assert st.offset == part.cut and st.flows_held == len(part.blobs)
        restored_flows += len(part.blobs)
        flows, http = results_from(st, log, part.cut + 1)
        # The same as never stopping: a run of this release over the whole log makes the
        # same records after the cut.
        whole = PartitionState(part.name, CONFIG, codec)
        for off in range(part.cut + 1):
            whole.apply(off, log[off])
        if version == 1:
            # That release kept no TCP health state and named no protocol but HTTP by
            # content (FlowRecord's TCP health fields and DNS/TLS/SSH came after it): a flow
            # it saved counts health from the upgrade on and keeps its protocol decision.
            # Every other field is as that release made it.
            assert [_no_health(f) for f in flows] == [_no_health(f) for f in part.flows]
            assert http == part.http
            uninterrupted = results_from(whole, log, part.cut + 1)
            assert [_no_health(f) for f in uninterrupted[0]] == [_no_health(f) for f in flows]
            assert uninterrupted[1] == http
        else:
            assert flows == part.flows
            assert http == part.http
            assert results_from(whole, log, part.cut + 1) == (flows, http)
    assert restored_flows > 0


def test_previous_release_state_is_rewritten_in_the_current_format():
    """After restoring version-1 state, the next snapshot writes every flow again as version
    2 (and deletes the ones that ended), so one Meta version never covers two formats."""
    key, fx = load_fixture(1, "zeek__http_methods.pcap", 5)
    logs = partition_logs(records_of("zeek__http_methods.pcap", 5))
    codec = Codec(key)
    part = max(fx.partitions, key=lambda p: len(p.blobs))
    log = logs[int(part.name.rsplit(":", 1)[1])]
    st = PartitionState.restore(part.name, CONFIG, codec, part.meta, part.blobs)
    st.apply(part.cut + 1, log[part.cut + 1])
    snap = st.snapshot()
    assert msgspec.msgpack.decode(snap.meta, type=Meta).version == VERSION
    assert set(snap.put) | set(snap.delete) == set(part.blobs) | set(snap.put)
    assert set(snap.put) >= set(part.blobs) - set(snap.delete)
    assert all(b[:1] == bytes([VERSION]) for b in snap.put.values())
    st.saved_ok(snap)
    again = PartitionState.restore(part.name, CONFIG, codec, snap.meta, snap.put)
    assert again.flows_held == st.flows_held


# -- round trips --------------------------------------------------------------------------
@pytest.mark.parametrize("capture,seed", CASES, ids=[case_id(*c) for c in CASES])
def test_restore_at_every_batch_boundary_changes_nothing(capture, seed):
    """The state is snapshotted and restored into a new PartitionState after every batch;
    the records are those of an uninterrupted run, and every restored state encodes to the
    bytes it came from (nothing lost or altered by the round trip)."""
    codec = Codec(b"round-trip-key")
    seen = {"analyzers": 0, "pending": 0, "waiting": 0, "held": 0, "txn": 0}
    for p, log in partition_logs(records_of(capture, seed)).items():
        name = f"g:t:{p}"
        ref = PartitionState(name, CONFIG, codec)
        want = results_from(ref, log, 0)
        st = PartitionState(name, CONFIG, codec)
        got_f, got_h = [], []
        for off in range(len(log)):
            res = st.apply(off, log[off])
            got_f += res.flows
            got_h += res.http
            for f in st.proc.flows.flows.values():
                a = f.l7
                seen["held"] += bool(f.l7_held)
                if isinstance(a, HttpAnalyzer):
                    seen["analyzers"] += 1
                    seen["pending"] += bool(a.orig.pending or a.resp.pending)
                    seen["waiting"] += bool(a.waiting)
                    seen["txn"] += bool(a.conv.requests.txn or a.conv.responses.txn)
            snap = st.snapshot(full=True)
            st = PartitionState.restore(name, CONFIG, codec, snap.meta, snap.put)
            assert st.snapshot(full=True).put == snap.put
        assert (got_f, got_h) == want
    assert seen["analyzers"], seen


def test_round_trips_covered_every_kind_of_held_object():
    """The cases, together, put each kind of object in a snapshot at some boundary."""
    kinds = {"pending": 0, "waiting": 0, "held": 0, "txn": 0, "in_two_places": 0}
    for capture, seed in CASES:
        for p, log in partition_logs(records_of(capture, seed)).items():
            st = PartitionState(f"g:t:{p}", CONFIG, Codec(b"k"))
            for off in range(len(log)):
                st.apply(off, log[off])
                for f in st.proc.flows.flows.values():
                    a = f.l7
                    kinds["held"] += bool(f.l7_held)
                    if not isinstance(a, HttpAnalyzer):
                        continue
                    kinds["pending"] += bool(a.orig.pending or a.resp.pending)
                    kinds["waiting"] += bool(a.waiting)
                    t = a.conv.requests.txn or a.conv.responses.txn
                    kinds["txn"] += t is not None
                    kinds["in_two_places"] += any(t is x for x in a.conv.pending)
    assert all(kinds.values()), kinds


def test_one_transaction_in_two_places_stays_one_object():
    recs = records_of("zeek__http_methods.pcap", 5)
    codec = Codec(b"k")
    for p, log in partition_logs(recs).items():
        st = PartitionState(f"g:t:{p}", CONFIG, codec)
        for off in range(len(log)):
            st.apply(off, log[off])
            for f in st.proc.flows.flows.values():
                a = f.l7
                if not a:
                    continue
                for which in ("requests", "responses"):
                    t = getattr(a.conv, which).txn
                    where = [i for i, x in enumerate(a.conv.pending) if x is t]
                    if t is None or not where:
                        continue
                    g = codec.loads(codec.dumps(f, st.proc), st.proc).l7
                    t2 = getattr(g.conv, which).txn
                    assert t2 is g.conv.pending[where[0]]
                    t2.tag("seen-once")  # one object: the tag shows in both places
                    assert "seen-once" in g.conv.pending[where[0]].tags
                    assert g.orig.consumer is g.conv.requests
                    assert g.resp.consumer is g.conv.responses
                    assert g.l7 is st.proc.l7 and g.orig.stats is st.proc.l7.stats
                    assert g.conv.config is st.proc.l7.config.http
                    return
    pytest.fail("no message in progress while its exchange is pending in the corpus case")


# -- refusals -----------------------------------------------------------------------------
class _WritesAFile:
    """A pickle that, unpickled by pickle.loads, creates a file (the attack on version 1)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _state(codec: Codec):
    recs = records_of("dpkt__http.pcap")
    st = PartitionState("g:t:0", CONFIG, codec)
    st.apply(0, msgspec.structs.replace(partition_logs(recs, 1)[0][0], records=recs[:6]))
    return st, st.snapshot()


def _meta(version: int) -> bytes:
    return msgspec.msgpack.encode(Meta(version, 0, 0, 0, {}))


def _v1_signed(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, key=key, digest_size=TAG_LEN).digest() + data


def test_forged_blobs_are_refused_and_nothing_runs(tmp_path):
    key = b"the-real-key"
    codec = Codec(key)
    _, snap = _state(codec)
    fld = next(iter(snap.put))
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_WritesAFile(str(marker)))
    cases = {
        # Without the key: a tag of zeros, or one made with another key.
        "v2, no key": (2, bytes([2]) + bytes(TAG_LEN) + evil, "integrity"),
        "v2, other key": (2, _v2_signed(b"attacker", evil), "integrity"),
        "v1, no key": (1, bytes(TAG_LEN) + evil, "integrity"),
        # With the key: the version-1 reader names the global and refuses it unbuilt.
        "v1, signed": (1, _v1_signed(key, evil), "posix.system|os.system|nt.system"),
        # Another version, even correctly signed.
        "v3 blob, signed": (2, _v2_signed(key, snap.put[fld][1 + TAG_LEN:], version=3),
                            "format 03"),
        # Correctly signed, right version, not a flow state.
        "v2, signed pickle": (2, _v2_signed(key, evil), "unreadable"),
        "v2, signed map": (2, _v2_signed(key, msgspec.msgpack.encode({"key": 1})),
                           "unreadable"),
    }
    for what, (version, blob, match) in cases.items():
        with pytest.raises(StateError, match=match):
            PartitionState.restore("g:t:0", CONFIG, codec, _meta(version), {fld: blob})
        assert not marker.exists(), what
    # A Meta of a version this worker does not know.
    with pytest.raises(StateError, match="state version 9"):
        PartitionState.restore("g:t:0", CONFIG, codec, _meta(9), snap.put)
    with pytest.raises(StateError, match="meta unreadable"):
        PartitionState.restore("g:t:0", CONFIG, codec, evil, snap.put)
    # And the control: pickle.loads itself would have written the file.
    pickle.loads(evil)
    assert marker.exists()


def _v2_signed(key: bytes, body: bytes, version: int = 2) -> bytes:
    head = bytes([version])
    return head + hashlib.blake2b(head + body, key=key, digest_size=TAG_LEN).digest() + body


def test_version_one_reader_builds_only_the_old_core_classes(tmp_path):
    """Globals a hostile (but signed) version-1 blob may name, each refused by name."""
    key = b"k"
    codec = Codec(key)
    import builtins
    import collections
    import subprocess
    for obj in (builtins.eval, subprocess.Popen, collections.OrderedDict, pickle.loads,
                Path, Codec):
        data = pickle.dumps(obj)
        with pytest.raises(StateError, match="refused"):
            PartitionState.restore("g:t:0", CONFIG, codec, _meta(1),
                                   {b"f": _v1_signed(key, data)})
    # A pickle of an allowed class but not a flow.
    with pytest.raises(StateError, match="holds a deque"):
        PartitionState.restore("g:t:0", CONFIG, codec, _meta(1),
                               {b"f": _v1_signed(key, pickle.dumps(collections.deque()))})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=hst.binary(max_size=400), version=hst.sampled_from([1, 2]),
       sign=hst.booleans())
def test_arbitrary_bytes_only_ever_raise_state_error(body, version, sign):
    key = b"fuzz-key"
    codec = Codec(key)
    if version == 2:
        blob = _v2_signed(key, body) if sign else bytes([2]) + body
    else:
        blob = _v1_signed(key, body) if sign else body
    try:
        PartitionState.restore("g:t:0", CONFIG, codec, _meta(version), {b"f": blob})
    except StateError:
        pass


@settings(max_examples=200, deadline=None)
@given(data=hst.data())
def test_signed_mutations_of_a_real_state_only_raise_state_error(data):
    """A real flow blob with bytes flipped in its body and signed again (what a bug or a key
    holder could write): restored, or refused with StateError, never another exception."""
    key = b"fuzz-key"
    codec = Codec(key)
    _, snap = STATE_FOR_FUZZ
    blob = data.draw(hst.sampled_from(sorted(snap.put.values())))
    body = bytearray(blob[1 + TAG_LEN:])
    for _ in range(data.draw(hst.integers(1, 4))):
        i = data.draw(hst.integers(0, len(body) - 1))
        body[i] = data.draw(hst.integers(0, 255))
    try:
        PartitionState.restore("g:t:0", CONFIG, codec, _meta(2), {b"f": _v2_signed(key, bytes(body))})
    except StateError:
        pass


STATE_FOR_FUZZ = _state(Codec(b"fuzz-key"))


def test_signed_state_with_impossible_values_is_refused():
    """Typed is not only the right types: counts that would drive the framer backwards, a
    sequence number past 32 bits, a transaction index past the list are refused too."""
    key = b"k"
    codec = Codec(key)
    _, snap = _state(codec)
    fld, blob = next((k, v) for k, v in snap.put.items() if b"GET" in v or b"HTTP" in v)
    st = codec._decoder.decode(blob[1 + TAG_LEN:])
    assert st.l7 is not None and st.l7 is not False
    breakages = {
        "negative body remaining": lambda s: setattr(s.l7.conv.requests, "remaining", -1),
        "sequence past 32 bits": lambda s: setattr(s.l7.orig, "next_seq", 1 << 32),
        "framer state unknown": lambda s: setattr(s.l7.conv.responses, "state", 99),
        "txn index past the list": lambda s: s.l7.conv.pending.append(len(s.l7.conv.txns)),
    }
    for what, breaking in breakages.items():
        bad = codec._decoder.decode(blob[1 + TAG_LEN:])
        breaking(bad)
        forged = _v2_signed(key, msgspec.msgpack.encode(bad))
        with pytest.raises(StateError, match="unreadable"):
            PartitionState.restore("g:t:0", CONFIG, codec, _meta(2), {fld: forged})
    # and the untouched record, signed the same way, is read
    PartitionState.restore("g:t:0", CONFIG, codec, _meta(2),
                           {fld: _v2_signed(key, msgspec.msgpack.encode(st))})


@pytest.mark.parametrize("version", [1, 2])
def test_fixtures_hold_every_kind_of_object(version):
    """The committed blobs of each release are worth restoring: between them they hold
    out-of-order segments, segments waiting for the other direction, held first bytes, and a
    transaction both pending and in a framer."""
    kinds = dict(http=0, pending=0, waiting=0, held=0, txn_in_two_places=0)
    for capture, seed in CASES:
        key, fx = load_fixture(version, capture, seed)
        for part in fx.partitions:
            st = PartitionState.restore(part.name, CONFIG, Codec(key), part.meta, part.blobs)
            for f in st.proc.flows.flows.values():
                kinds["held"] += bool(f.l7_held)
                a = f.l7
                if isinstance(a, HttpAnalyzer):
                    kinds["http"] += 1
                    kinds["pending"] += bool(a.orig.pending or a.resp.pending)
                    kinds["waiting"] += bool(a.waiting)
                    for s in (a.conv.requests, a.conv.responses):
                        kinds["txn_in_two_places"] += any(s.txn is t for t in a.conv.pending)
    assert all(kinds.values()), kinds


def test_an_analyzer_without_a_stored_form_is_named_at_start(monkeypatch):
    """An analyzer added to the registry without a State fails the codec's construction with
    a message saying what it needs, not a flow's snapshot later."""
    import stream_app.core.l7 as l7mod

    class Bare:
        def packet(self, r, is_orig):
            pass

    real = l7mod.analyzer_classes
    monkeypatch.setattr(l7mod, "analyzer_classes", lambda: [*real(), Bare])
    with pytest.raises(TypeError, match="Bare cannot be stored: it needs a State"):
        Codec(b"k")
    monkeypatch.setattr(l7mod, "analyzer_classes", lambda: [*real(), _AnnotatedAnalyzer])
    assert _TypedState in Codec(b"k")._analyzers  # found by to_state's return annotation


class _TypedState(msgspec.Struct, tag="typed-test", array_like=True):
    n: int


class _AnnotatedAnalyzer:
    """No State attribute, but to_state says what it returns."""

    def to_state(self) -> _TypedState:
        return _TypedState(1)

    @classmethod
    def from_state(cls, st, l7, flow):
        return cls()


# -- the other analyzers (DNS, SSH, TLS) ---------------------------------------------------
L7_CASES = [("sv__vxlan-decoder-03__vxlan.pcap", 0), ("sv__vxlan-decoder-03__vxlan.pcap", 4),
            ("zeek__geneve-vxlan-dns-truncated.pcap", 0), ("sv__vxlan-decoder-01__input.pcap", 1)]


@pytest.mark.parametrize("capture,seed", L7_CASES, ids=[case_id(*c) for c in L7_CASES])
def test_every_analyzer_survives_restore_at_every_batch_boundary(capture, seed):
    """DNS (UDP and TCP) and SSH analyzers are stored as their own tagged records: restored
    after every batch, they make the same DNS/SSH records (and flows) as an uninterrupted run,
    and every restored state encodes to the bytes it came from."""
    codec = Codec(b"round-trip-key")
    kinds_seen: set[str] = set()
    for p, log in partition_logs(records_of(capture, seed)).items():
        name = f"g:t:{p}"
        ref = PartitionState(name, CONFIG, codec)
        want = [ref.apply(off, log[off]) for off in range(len(log))]
        st = PartitionState(name, CONFIG, codec)
        got = []
        for off in range(len(log)):
            got.append(st.apply(off, log[off]))
            for f in st.proc.flows.flows.values():
                if f.l7:
                    kinds_seen.add(type(f.l7).__name__)
            snap = st.snapshot(full=True)
            st = PartitionState.restore(name, CONFIG, codec, snap.meta, snap.put)
            assert st.snapshot(full=True).put == snap.put
        for kind in ("flows", "http", "dns", "tls", "ssh"):
            assert [r for res in got for r in getattr(res, kind)] == \
                [r for res in want for r in getattr(res, kind)], kind
    assert kinds_seen, "no analyzer was held at any batch boundary"
