"""TLS handshakes and SSH sessions as a user sees them in tls/ssh records: fingerprints
against the FoxIO spec's worked examples, streaming across segments and records, state
without pickle, hostile input, the corpus SSH capture against tshark, the TLS detectors."""

from __future__ import annotations

import datetime
import subprocess

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import TlsCertificate, TlsHandshake
from stream_app.core.detectors import DetectConfig, Detectors
from stream_app.core.detectors_tls import RareFingerprintConfig, TlsCertConfig
from stream_app.core.flowtable import FlowConfig
from stream_app.core.l7 import L7Config
from stream_app.core.processor import CoreConfig, Processor
from stream_app.core.ssh import SshAnalyzer, SshState
from stream_app.core.tls import (TlsAnalyzer, TlsState, is_grease, ja4, ja4s,
                                 parse_client_hello, parse_server_hello)
from tests.conftest import CORPUS
from tests.l7_records import records
from tests.test_http import Conn
from tests.tls_tshark import tshark_tls

# The worked examples of FoxIO's JA4 and JA4S specifications (github.com/FoxIO-LLC/ja4,
# technical_details/): a Chrome ClientHello with GREASE values, and a TLS 1.3 ServerHello.
CHROME_HELLO = bytes.fromhex(
    "1603010200010001fc0303b2c03e7ba990ef540c316a665d4d925f8e9079ac4b15687e587dc99016e75a6c20d0"
    "b0099243c9296a0c84153ea4ada7d87ad017f4211c2ea1350b0b3cc5514d5f00205a5a130113021303c02bc02f"
    "c02cc030cca9cca8c013c014009c009d002f003501000193fafa000000000024002200001f636f6e74656e742d"
    "6175746f66696c6c2e676f6f676c65617069732e636f6d0033002b00293a3a000100001d0020fb2cd8ef3d605b"
    "96ab03119ec4f30a6e2088cb1af86c41a81feace8706068c50000d001200100403080404010503080505010806"
    "060100230000000b00020100ff01000100000a000a00083a3a001d00170018001b000302000244690005000302"
    "683200120000002d000201010010000e000c02683208687474702f312e31000500050100000000002b0007060a"
    "0a03040303001700001a1a000100001500b8" + "00" * 184)
SERVER_HELLO_13 = bytes.fromhex(
    "160303007a020000760303236d214556452c55a0754487e64b1a8b0262c50ba23004c9d504166a6de343992"
    "0d0b0099243c9296a0c84153ea4ada7d87ad017f4211c2ea1350b0b3cc5514d5f130100002e00330024001d00"
    "2099e3cc43a2c9941ae75af1b2c7a629bee3ee7031973cad85c82f2f23677fb244002b00020304")
KEYSHARE = b"\x00\x33\x00\x26\x00\x24\x00\x1d\x00\x20" + b"\x11" * 32


def _body(record: bytes) -> bytes:
    return record[9:]  # record header (5) + handshake header (4)


def test_ja4_and_ja4s_of_the_spec_examples():
    ch = parse_client_hello(_body(CHROME_HELLO))
    assert ch.server_name == "content-autofill.googleapis.com" and ch.alpn == ["h2", "http/1.1"]
    assert ja4(ch) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert any(is_grease(c) for c in ch.ciphers) and any(is_grease(e) for e in ch.extensions)
    sh = parse_server_hello(_body(SERVER_HELLO_13))
    assert ja4s(sh) == "t130200_1301_234ea6891581"


@pytest.mark.parametrize("alpn,want", [(None, "00"), ("h2", "h2"), ("http/1.1", "h1"),
                                       ("\xabx", "a8"), ("h\xff", "6f")])
def test_ja4_alpn_characters(alpn, want):
    ch = parse_client_hello(_body(CHROME_HELLO))
    ch.alpn = [alpn] if alpn else []
    assert ja4(ch).split("_")[0][-2:] == want


# -- a TLS 1.2 handshake through the whole core, cut every way -------------------------------
def _cert(days_left: int = 30, self_signed: bool = True):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc.internal")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(0x1234ABCD)
            .not_valid_before(now - datetime.timedelta(days=60))
            .not_valid_after(now + datetime.timedelta(days=days_left))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("svc.internal")]), False)
            .sign(key if self_signed else other, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _hs(t: int, body: bytes) -> bytes:
    return bytes([t]) + len(body).to_bytes(3, "big") + body


def _records(ctype: int, data: bytes, size: int = 16384) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        chunk = data[i:i + size]
        out += bytes([ctype, 3, 3]) + len(chunk).to_bytes(2, "big") + chunk
    return out


def _server_flight(cert: bytes, sid: bytes = b"", record_size: int = 700) -> bytes:
    sh = (b"\x03\x03" + b"\x22" * 32 + bytes([len(sid)]) + sid + b"\xc0\x2f\x00"
          + (5 + 15).to_bytes(2, "big") + b"\xff\x01\x00\x01\x00"
          + b"\x00\x10\x00\x0b\x00\x09\x08http/1.1")
    chain = len(cert).to_bytes(3, "big") + cert
    msgs = _hs(11, len(chain).to_bytes(3, "big") + chain) + _hs(14, b"")
    # The ServerHello in a record of its own, the certificate across several.
    return _records(22, _hs(2, sh)) + _records(22, msgs, record_size)


def _client_hello() -> bytes:
    # Chrome's hello, re-framed as one TLS 1.2-version record (its body unchanged)
    return CHROME_HELLO[:517]


def _tls12_conn(cert: bytes, step: int, sid: bytes = b"", bulk: int = 20) -> Conn:
    c = Conn().handshake()
    hello = _client_hello()
    for i in range(0, len(hello), step):
        c.c(hello[i:i + step])
    flight = _server_flight(cert, sid)
    for i in range(0, len(flight), step * 3):
        c.s(flight[i:i + step * 3])
    c.c(_records(22, _hs(16, b"\x00" * 66)) + b"\x14\x03\x03\x00\x01\x01" + b"\x16\x03\x03\x00\x28" + b"\x99" * 40)
    c.s(b"\x14\x03\x03\x00\x01\x01" + b"\x16\x03\x03\x00\x28" + b"\x98" * 40)
    for _ in range(bulk):  # bulk: must cost nothing once the handshake is over
        c.c(b"\x17\x03\x03\x00\x10" + b"\x55" * 16)
        c.s(b"\x17\x03\x03\x04\x00" + b"\x66" * 1024)
    return c.close()


def _core():
    return Processor(CoreConfig(flows=FlowConfig(), l7=L7Config(), detect=None))


def _run(pkts, core=None, roundtrip_at: int | None = None, codec_at: int | None = None):
    core = core or _core()
    out = []
    for i, p in enumerate(pkts):
        out += core.process([p]).tls
        if codec_at is not None and i == codec_at:
            # Today's snapshot path (stream_app/state/codec.py) pickles the whole flow.
            from stream_app.state.codec import Codec
            codec = Codec(b"k")
            [(k, f)] = core.flows.flows.items()
            assert isinstance(f.l7, TlsAnalyzer)
            core.flows.flows[k] = codec.loads(codec.dumps(f, core), core)
        if roundtrip_at is not None and i == roundtrip_at:
            [f] = core.flows.flows.values()
            a = f.l7
            assert isinstance(a, TlsAnalyzer)
            blob = msgspec.msgpack.encode(a.to_state())
            st = msgspec.msgpack.decode(blob, type=TlsState | SshState)
            f.l7 = TlsAnalyzer.from_state(st, core.l7, f)
    res = core.finish()
    return out + list(res.tls), res.flows, core


@pytest.mark.parametrize("step", [1, 7, 100, 4000])
def test_tls12_handshake_across_segments_and_records(step):
    cert = _cert()
    got, flows, core = _run(_tls12_conn(cert, step).pkts)
    [t] = got
    assert (t.version, t.cipher, t.server_name, t.alpn) == (
        "TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "content-autofill.googleapis.com",
        "http/1.1")
    assert t.ja4 == "t13d1516h2_8daaf6152771_e5627efa2ab1" and t.established and not t.resumed
    assert t.ja4s.startswith("t1202h1_c02f_") and t.tags == [] and t.alert is None
    [leaf] = t.cert_chain
    assert leaf.subject == leaf.issuer == "CN=svc.internal" and leaf.self_signed
    assert leaf.serial == "1234abcd" and leaf.sans == ["svc.internal"]
    [f] = flows
    assert f.app_proto == "tls" and f.app_proto_source == "content"
    # The bulk after the handshake costs nothing: not one more segment reassembled.
    _, _, without = _run(_tls12_conn(cert, step, bulk=0).pkts)
    assert core.l7.stats.segments == without.l7.stats.segments


def test_issuer_named_as_subject_but_signed_by_another_key_is_not_self_signed():
    [t], _, _ = _run(_tls12_conn(_cert(self_signed=False), 500).pkts)
    assert t.cert_chain[0].issuer == t.cert_chain[0].subject
    assert not t.cert_chain[0].self_signed


@pytest.mark.parametrize("at", [10, 150, 190, 215])
def test_state_round_trip_mid_handshake_changes_nothing(at):
    cert = _cert()
    pkts = _tls12_conn(cert, 3).pkts
    plain, _, _ = _run(pkts)
    again, _, _ = _run(pkts, roundtrip_at=at)
    assert len(plain) == len(again) == 1
    assert msgspec.structs.asdict(plain[0]) == msgspec.structs.asdict(again[0])


@pytest.mark.parametrize("at", [150, 215])
def test_flow_snapshot_mid_handshake_restores(at):
    pkts = _tls12_conn(_cert(), 3).pkts
    plain, _, _ = _run(pkts)
    again, _, _ = _run(pkts, codec_at=at)
    assert [msgspec.structs.asdict(t) for t in again] == [msgspec.structs.asdict(plain[0])]


def test_session_id_echo_is_a_resumption_and_a_fatal_alert_a_failure():
    sid = _body(CHROME_HELLO)[35:67]
    [t], _, _ = _run(_tls12_conn(_cert(), 300, sid=sid).pkts)
    assert t.resumed
    c = Conn().handshake()
    c.c(_client_hello())
    c.s(b"\x15\x03\x03\x00\x02\x02\x28")  # fatal handshake_failure
    [t], _, _ = _run(c.close().pkts)
    assert (t.established, t.alert, t.version) == (False, "handshake_failure", None)
    assert t.tags == ["failed", "no_server_hello"]


def test_tls13_is_emitted_at_the_server_hello():
    c = Conn().handshake()
    c.c(CHROME_HELLO)
    c.s(SERVER_HELLO_13 + b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x20" + b"\x77" * 32)
    [t], _, _ = _run(c.close().pkts)
    assert (t.version, t.cipher, t.ja4s, t.established) == (
        "TLSv1.3", "TLS_AES_128_GCM_SHA256", "t130200_1301_234ea6891581", True)


def test_a_flow_ending_early_is_emitted_with_what_was_seen():
    c = Conn().handshake()
    c.c(CHROME_HELLO)
    [t], _, _ = _run(c.close().pkts)
    assert t.ja4 and not t.established and t.tags == ["no_server_hello"]


def test_hostile_record_length_is_tagged_malformed_and_left():
    c = Conn().handshake()
    c.c(CHROME_HELLO[:5 + 200])  # the ClientHello still arriving
    c.s(b"\x16\x03\x03\xff\xff" + b"\x00" * 100)  # longer than any TLS record
    c.s(b"\x00" * 1000)
    [t], _, _ = _run(c.close().pkts)
    assert "malformed" in t.tags and not t.established


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=600), st.integers(1, 50))
def test_arbitrary_bytes_after_a_hello_never_crash(cbytes, sbytes, cut):
    c = Conn().handshake()
    c.c(b"\x16\x03\x01" + cbytes[:cut])
    c.s(b"\x16\x03\x03" + sbytes[:cut])
    c.c(cbytes[cut:])
    c.s(sbytes[cut:])
    got, flows, _ = _run(c.close().pkts)
    assert len(got) <= 1 and len(flows) == 1
    for t in got:
        assert t.established is False or t.version is not None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=700))
def test_arbitrary_hello_bodies_parse_or_are_malformed(body):
    c = Conn().handshake()
    c.c(_records(22, _hs(1, body)))
    c.s(_records(22, _hs(2, body)))
    got, _, _ = _run(c.close().pkts)
    assert len(got) == 1  # emitted once, with tags for what was wrong


# -- SSH ----------------------------------------------------------------------------------------
def test_ssh_on_the_aws_mirror_capture_matches_tshark(tshark):
    path = CORPUS / "sv__vxlan-decoder-03__vxlan.pcap"
    rows = subprocess.run([tshark, "-n", "-r", str(path), "-Y", "ssh.protocol || ssh.kex.hassh"
                           " || ssh.kex.hasshserver", "-T", "fields", "-E", "occurrence=l",
                           "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "ssh.protocol",
                           "-e", "ssh.kex.hassh", "-e", "ssh.kex.hasshserver"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    theirs: dict = {}
    for line in rows:
        sp, dp, proto, h, hs = line.split("\t")
        client = int(dp) if int(sp) == 22 else int(sp)
        e = theirs.setdefault(client, {})
        if proto:
            e["server" if int(sp) == 22 else "client"] = proto
        if h:
            e["hassh"] = h
        if hs:
            e["hassh_server"] = hs
    recs = records(path)
    ours = {s.srcport: {"client": s.client, "server": s.server, "hassh": s.hassh,
                        "hassh_server": s.hassh_server} for s in recs.ssh}
    assert ours == theirs and len(ours) == 4
    for s in recs.ssh:
        assert (s.kex_alg, s.host_key_alg, s.cipher_alg) == (
            "curve25519-sha256", "ecdsa-sha2-nistp256", "chacha20-poly1305@openssh.com")
        assert s.tags == [] and s.dstaddr == "172.31.0.238" and s.vni == 5569041
    named = {(f.dstport, f.app_proto, f.app_proto_source) for f in recs.flows if f.protocol == 6}
    assert named == {(22, "ssh", "content")}


def _ssh_bytes() -> tuple[bytes, bytes]:
    """The first two messages (identification line, KEXINIT) of each side of one SSH
    connection of the AWS mirror capture, as tshark reads them."""
    import shutil
    out = []
    for a, b in ((37180, 22), (22, 37180)):
        rows = subprocess.run([shutil.which("tshark"), "-n", "-r",
                               str(CORPUS / "sv__vxlan-decoder-03__vxlan.pcap"), "-Y",
                               f"tcp.srcport == {a} && tcp.dstport == {b} && tcp.len > 0",
                               "-T", "fields", "-e", "tcp.payload"],
                              capture_output=True, text=True, check=True).stdout.split()
        out.append(bytes.fromhex(rows[0]) + bytes.fromhex(rows[1]))
    return out[0], out[1]


def _ssh_conn(step: int) -> Conn:
    c = Conn().handshake()
    cb, sb = _ssh_bytes()
    for i in range(0, max(len(cb), len(sb)), step):
        if cb[i:i + step]:
            c.c(cb[i:i + step])
        if sb[i:i + step]:
            c.s(sb[i:i + step])
    return c.close()


def _ssh_run(pkts, roundtrip_at=None):
    core = _core()
    out = []
    for i, p in enumerate(pkts):
        out += core.process([p]).ssh
        if roundtrip_at is not None and i == roundtrip_at and core.flows.flows:
            [f] = core.flows.flows.values()
            if isinstance(f.l7, SshAnalyzer):
                st = msgspec.msgpack.decode(msgspec.msgpack.encode(f.l7.to_state()),
                                            type=TlsState | SshState)
                f.l7 = SshAnalyzer.from_state(st, core.l7, f)
    return out + list(core.finish().ssh)


@pytest.mark.parametrize("at", [None, 5, 40, 150])
def test_ssh_state_round_trip_and_any_segmentation(at):
    [s] = _ssh_run(_ssh_conn(7).pkts, roundtrip_at=at)
    assert s.client.startswith("SSH-2.0-") and s.hassh and s.hassh_server and s.kex_alg
    assert s.tags == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=400))
def test_ssh_arbitrary_bytes_never_crash(cb, sb):
    c = Conn().handshake()
    c.c(b"SSH-2.0-x\r\n" + cb)
    c.s(b"SSH-" + sb)
    got = _ssh_run(c.close().pkts)
    assert len(got) == 1 and got[0].client == "SSH-2.0-x"


# -- detectors ----------------------------------------------------------------------------------
def _hs_rec(ts, src, ja4_, dst="10.1.2.3", certs=()):
    return TlsHandshake(f"id{ts}{src}", ts, "1:x", None, src, 40000, dst, 443, "TLSv1.2", None,
                        None, [], None, ja4_, None, False, True, None, list(certs), [], None)


def test_rare_fingerprint_after_warm_up_only():
    d = Detectors(DetectConfig(rare_tls_fingerprint=RareFingerprintConfig(warmup=600)))
    alerts = d.observe([], [], tls=[_hs_rec(1000.0 + i, f"10.0.0.{i}", f"fp{i % 3}")
                                    for i in range(50)])
    assert alerts == []  # warm-up: learning
    alerts = d.observe([], [], tls=[_hs_rec(2000.0, "10.0.0.9", "fp1"),  # known
                                    _hs_rec(2001.0, "10.0.0.66", "new-one")])
    assert [(a.type, a.source) for a in alerts] == [("rare_tls_fingerprint", "10.0.0.66")]
    alerts = d.observe([], [], tls=[_hs_rec(2002.0, "10.0.0.67", "new-one")])
    assert alerts == []  # a second source: no longer rare (max_sources 1)


def _rare_alerts(state_factory, engines: int):
    cfg = DetectConfig(rare_tls_fingerprint=RareFingerprintConfig(warmup=600))
    es = [Detectors(cfg, state=state_factory()) for _ in range(engines)]
    recs = [_hs_rec(1000.0 + i, f"10.0.0.{i}", f"fp{i % 3}") for i in range(50)]
    recs += [_hs_rec(2000.0, "10.0.0.9", "fp1"), _hs_rec(2001.0, "10.0.0.66", "new-one"),
             _hs_rec(2002.0, "10.0.0.67", "new-one"), _hs_rec(2003.0, "10.0.0.68", "new-two")]
    out = []
    for i, r in enumerate(recs):  # records spread over the engines, as over workers
        out += es[i % engines].observe([], [], tls=[r])
    return [(a.alert_id, a.type, a.source) for a in out]


def test_rare_fingerprint_the_same_with_workers_sharing_redis(tmp_path):
    """Distributed mode: two engines sharing Redis (RedisDetectorState) alert as one
    in-memory engine does."""
    from stream_app.state.detectors import RedisDetectorState
    from stream_app.state.store import RedisConfig, connect
    from tests.services.redis_service import LocalRedis
    alone = _rare_alerts(lambda: None, 1)
    assert [a[2] for a in alone] == ["10.0.0.66", "10.0.0.68"]
    r = LocalRedis(tmp_path / "redis")
    r.start()
    try:
        client = connect(RedisConfig(url=r.url))
        assert _rare_alerts(lambda: RedisDetectorState(client, prefix="md:tls"), 2) == alone
    finally:
        r.stop()


def test_certificate_detector_only_for_internal_servers():
    now = 1_800_000_000.0
    bad = TlsCertificate("CN=x", "CN=x", "1", now - 100, now - 10, [], "00", True)
    d = Detectors(DetectConfig(tls_certificate=TlsCertConfig(internal_cidrs=["203.0.113.0/24"])))
    alerts = d.observe([], [], tls=[_hs_rec(now, "10.0.0.1", None, "10.9.9.9", [bad]),
                                    _hs_rec(now, "10.0.0.1", None, "203.0.113.5", [bad]),
                                    _hs_rec(now, "10.0.0.1", None, "8.8.8.8", [bad])])
    assert sorted((a.type, a.targets[0]) for a in alerts) == [
        ("tls_expired_certificate", "10.9.9.9:443"), ("tls_expired_certificate", "203.0.113.5:443"),
        ("tls_self_signed_certificate", "10.9.9.9:443"),
        ("tls_self_signed_certificate", "203.0.113.5:443")]


# -- the corpus against tshark --------------------------------------------------------------------
DIFFERENT = {
    # TLS inside an HTTP CONNECT tunnel: the flow is HTTP; the tunnel's bytes are not analysed
    # further (a deliberate difference, docs/tls.md).
    "connect-with-header.pcap": "tunnel",
}


def test_corpus_tls_matches_tshark(tshark):
    seen = []
    for path in sorted(CORPUS.rglob("*.pcap")):
        theirs = tshark_tls(tshark, path)
        if not theirs:
            continue
        seen.append(path.name)
        mine = {(t.srcaddr, t.srcport): t for t in records(path).tls}
        if path.name in DIFFERENT:
            assert not mine
            continue
        assert set(mine) == set(theirs), path.name
        for k, h in theirs.items():
            assert (mine[k].ja4, mine[k].ja4s, mine[k].server_name) == (
                h.get("ja4"), h.get("ja4s"), h.get("server_name")), path.name
    assert seen == ["connect-with-header.pcap"]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_a_certificate_cryptography_rejects_is_tagged_not_fatal(junk):
    c = Conn().handshake()
    c.c(_client_hello())
    c.s(_server_flight(b"\x30\x82" + junk))
    [t], _, _ = _run(c.close().pkts)
    assert t.version == "TLSv1.2" and t.ja4 and t.cert_chain == []
    assert "bad_certificate" in t.tags


def test_bytes_lost_in_the_certificate_flight_are_a_gap_not_garbage():
    pkts = _tls12_conn(_cert(), 100).pkts
    server = [i for i, p in enumerate(pkts) if p.sport == 80 and p.payload_len]
    del pkts[server[1]]  # a segment inside the certificate: never captured
    [t], _, _ = _run(pkts)
    assert t.version == "TLSv1.2" and t.ja4 and "gap" in t.tags
    assert t.cert_chain == [] and not t.established


def test_an_overlong_ssh_banner_is_malformed():
    c = Conn().handshake()
    c.c(b"SSH-2.0-" + b"x" * 400 + b"\r\n")
    c.s(b"SSH-2.0-OpenSSH_9.2\r\n")
    [s] = _ssh_run(c.close().pkts)
    assert s.client is None and "malformed" in s.tags  # reported at once, and left
