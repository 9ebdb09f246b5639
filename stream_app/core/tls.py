"""TLS handshakes: the ClientHello, ServerHello and (TLS 1.2 and below) the certificate chain
of one TCP connection, read from the two reassembled byte streams, turned into one
TlsHandshake record with JA4/JA4S fingerprints.

The TLS framing is parsed by hand, on purpose: the input is a stream cut anywhere (a
handshake message may span records, a record span segments), partial (a capture may start
late or lose bytes) and hostile, and only the few clear-text messages of the handshake
matter. No maintained Python parser fits that (dpkt.ssl wants whole records and raises on
truncation; tlslite and scapy parse whole sessions). Certificates, where the format is
deep and well served, go to ``cryptography``'s x509.

Bounded: a record longer than TLS allows (2**14 + 2048 bytes) is hostile or not TLS: the
flow is tagged malformed and left; a handshake message is kept up to MAX_HANDSHAKE bytes
(a certificate chain spans records). Once the handshake is over (both ChangeCipherSpecs, a
TLS 1.3 ServerHello, or a fatal alert) the record is emitted and the flow detached: the
encrypted bulk costs nothing.
"""

from __future__ import annotations

import hashlib
from struct import unpack
from functools import lru_cache

import msgspec

from schemas.records import TlsCertificate, TlsHandshake
from stream_app.core.handshake import HandshakeAnalyzer
from stream_app.core.reassembly import Direction, DirectionState

NS = 1_000_000_000
MAX_RECORD = (1 << 14) + 2048
"""TLSCiphertext's largest length (RFC 8446 5.2); anything longer is not TLS."""
MAX_HANDSHAKE = 1 << 16
"""A handshake message kept at most (a long certificate chain fits)."""

HANDSHAKE, CCS, ALERT, APPDATA = 22, 20, 21, 23
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
"""ServerHello.random of a TLS 1.3 HelloRetryRequest (RFC 8446 4.1.3)."""

VERSIONS = {0x0304: "TLSv1.3", 0x0303: "TLSv1.2", 0x0302: "TLSv1.1", 0x0301: "TLSv1",
            0x0300: "SSLv3", 0x0002: "SSLv2"}
JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3",
                0x0002: "s2", 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}

CIPHERS = {
    0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256", 0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", 0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA", 0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA", 0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256", 0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x0005: "TLS_RSA_WITH_RC4_128_SHA",
    0x0004: "TLS_RSA_WITH_RC4_128_MD5", 0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
}
ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
    40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
    44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
    80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
    100: "no_renegotiation", 109: "missing_extension", 110: "unsupported_extension",
    112: "unrecognized_name", 113: "bad_certificate_status_response",
    115: "unknown_psk_identity", 116: "certificate_required", 120: "no_application_protocol",
}
EXT_SNI, EXT_GROUPS, EXT_SIGALGS, EXT_ALPN, EXT_PSK, EXT_VERSIONS = 0, 10, 13, 16, 41, 43


def is_grease(v: int) -> bool:
    """RFC 8701: 0x0A0A, 0x1A1A ... 0xFAFA (both bytes equal, low nibble A)."""
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


class Malformed(Exception):
    pass


class _Reader:
    """Bounds-checked reads over a handshake message body (hostile input: any overrun is
    Malformed, never an IndexError deep in a parser)."""

    __slots__ = ("b", "i", "end")

    def __init__(self, b: bytes, i: int = 0, end: int | None = None):
        self.b, self.i, self.end = b, i, len(b) if end is None else end

    def take(self, n: int) -> bytes:
        j = self.i + n
        if j > self.end:
            raise Malformed
        out = self.b[self.i:j]
        self.i = j
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def vec(self, lenbytes: int) -> bytes:
        return self.take(int.from_bytes(self.take(lenbytes), "big"))

    def left(self) -> int:
        return self.end - self.i


def _u16s(b: bytes) -> list[int]:
    n = len(b) >> 1
    return list(unpack(f">{n}H", b[:n * 2]))


def _extensions(r: _Reader) -> list[tuple[int, bytes]]:
    if not r.left():
        return []  # no extensions block at all (SSLv3-era hellos)
    b = r.vec(2)
    # Index arithmetic, not _Reader calls: this loop is most of a hello's parse cost.
    out = []
    i, n = 0, len(b)
    while i < n:
        if i + 4 > n:
            raise Malformed
        j = i + 4 + ((b[i + 2] << 8) | b[i + 3])
        if j > n:
            raise Malformed
        out.append(((b[i] << 8) | b[i + 1], b[i + 4:j]))
        i = j
    return out


def _alpn_list(data: bytes) -> list[str]:
    r = _Reader(_Reader(data).vec(2))
    out = []
    while r.left():
        out.append(r.vec(1).decode("latin-1"))
    return out


class ClientHello(msgspec.Struct):
    version: int
    ciphers: list[int]
    extensions: list[int]
    """Extension types in the order sent."""
    session_id: bytes
    server_name: str | None
    alpn: list[str]
    versions: list[int]
    sigalgs: list[int]
    groups: list[int]


class ServerHello(msgspec.Struct):
    version: int
    """The negotiated version (supported_versions when present)."""
    cipher: int
    extensions: list[int]
    session_id: bytes
    alpn: str | None
    psk: bool
    retry: bool
    """A HelloRetryRequest."""


def parse_client_hello(body: bytes) -> ClientHello:
    r = _Reader(body)
    version = r.u16()
    r.take(32)
    sid = r.vec(1)
    ciphers = _u16s(r.vec(2))
    r.vec(1)  # compression methods
    sni = None
    alpn: list[str] = []
    versions: list[int] = []
    sigalgs: list[int] = []
    groups: list[int] = []
    types = []
    for t, data in _extensions(r):
        types.append(t)
        if t == EXT_SNI and data:
            names = _Reader(_Reader(data).vec(2))
            while names.left():
                kind, name = names.u8(), names.vec(2)
                if kind == 0:
                    sni = name.decode("utf-8", "backslashreplace")
                    break
        elif t == EXT_ALPN and data:
            alpn = _alpn_list(data)
        elif t == EXT_VERSIONS and data:
            versions = _u16s(_Reader(data).vec(1))
        elif t == EXT_SIGALGS and data:
            sigalgs = _u16s(_Reader(data).vec(2))
        elif t == EXT_GROUPS and data:
            groups = _u16s(_Reader(data).vec(2))
    return ClientHello(version, ciphers, types, sid, sni, alpn, versions, sigalgs, groups)


def parse_server_hello(body: bytes) -> ServerHello:
    r = _Reader(body)
    version = r.u16()
    random = r.take(32)
    sid = r.vec(1)
    cipher = r.u16()
    r.u8()  # compression
    types = []
    alpn = None
    psk = False
    for t, data in _extensions(r):
        types.append(t)
        if t == EXT_VERSIONS and len(data) >= 2:
            version = int.from_bytes(data[:2], "big")
        elif t == EXT_ALPN and data:
            names = _alpn_list(data)
            alpn = names[0] if names else None
        elif t == EXT_PSK:
            psk = True
    return ServerHello(version, cipher, types, sid, alpn, psk, random == HRR_RANDOM)


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _alpn_chars(alpn: str | None) -> str:
    """JA4's first and last characters of the first ALPN value; when either is not ASCII
    alphanumeric, the first and last characters of its hex instead."""
    if not alpn:
        return "00"
    a, z = alpn[0], alpn[-1]
    if a.isascii() and a.isalnum() and z.isascii() and z.isalnum():
        return a + z
    h = alpn.encode("latin-1").hex()
    return h[0] + h[-1]


def ja4(ch: ClientHello, transport: str = "t") -> str:
    """FoxIO JA4 (technical_details/JA4.md): GREASE ignored everywhere; the version is the
    highest of supported_versions when sent; the extension hash leaves out SNI and ALPN
    but they count; signature algorithms in the order sent."""
    return _ja4(transport, ch.version, tuple(ch.versions), tuple(ch.ciphers),
                tuple(ch.extensions), tuple(ch.sigalgs), ch.alpn[0] if ch.alpn else None)


@lru_cache(maxsize=4096)
def _ja4(transport: str, version: int, versions: tuple, ciphers: tuple, extensions: tuple,
         sigalgs: tuple, alpn: str | None) -> str:
    # Cached: the clients of a network are a few stacks sending the same hello again and again.
    versions = [v for v in versions if not is_grease(v)]
    ver = JA4_VERSIONS.get(max(versions) if versions else version, "00")
    ciphers = [c for c in ciphers if not is_grease(c)]
    exts = [e for e in extensions if not is_grease(e)]
    sni = "d" if EXT_SNI in exts else "i"
    a = (f"{transport}{ver}{sni}{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}"
         f"{_alpn_chars(alpn)}")
    b = _hash12(",".join(sorted(f"{c:04x}" for c in ciphers))) if ciphers else "0" * 12
    rest = sorted(f"{e:04x}" for e in exts if e not in (EXT_SNI, EXT_ALPN))
    sig = [f"{s:04x}" for s in sigalgs if not is_grease(s)]
    text = ",".join(rest) + ("_" + ",".join(sig) if sig else "")
    c = _hash12(text) if rest else "0" * 12
    return f"{a}_{b}_{c}"


def ja4s(sh: ServerHello, transport: str = "t") -> str:
    """FoxIO JA4S (technical_details/JA4S.md): version, extension count and chosen ALPN,
    the cipher, and the hash of the extensions in the order sent."""
    ver = JA4_VERSIONS.get(sh.version, "00")
    a = f"{transport}{ver}{min(len(sh.extensions), 99):02d}{_alpn_chars(sh.alpn)}"
    c = _hash12(",".join(f"{e:04x}" for e in sh.extensions)) if sh.extensions else "0" * 12
    return f"{a}_{sh.cipher:04x}_{c}"


@lru_cache(maxsize=1024)
def parse_certificate(der: bytes) -> TlsCertificate:
    """One DER certificate with cryptography's x509. Self-signed: the issuer equals the
    subject and the signature verifies with the certificate's own key (a certificate that
    only names itself as issuer but was signed by another key is not self-signed).

    Cached by the DER bytes: a service presents the same certificate on every connection,
    and parsing plus a signature check is most of a TLS 1.2 handshake's cost
    (bench/bench_tls.py). The cached record is shared: records are read, never changed."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    subject = cert.subject.rfc4514_string()
    issuer = cert.issuer.rfc4514_string()
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(n) for n in ext.get_values_for_type(x509.DNSName)]
        sans += [str(n) for n in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    self_signed = False
    if cert.issuer == cert.subject:
        try:
            cert.verify_directly_issued_by(cert)
            self_signed = True
        except Exception:  # unsupported key type or a bad signature: not proven
            self_signed = False
    return TlsCertificate(subject, issuer, f"{cert.serial_number:x}",
                          cert.not_valid_before_utc.timestamp(),
                          cert.not_valid_after_utc.timestamp(), sans,
                          hashlib.sha256(der).hexdigest(), self_signed)


class _Side:
    """The consumer of one direction's reassembled bytes: TLS records, then handshake
    messages across records."""

    __slots__ = ("a", "is_orig", "buf", "hs", "encrypted", "ccs", "appdata")

    def __init__(self, analyzer: TlsAnalyzer, is_orig: bool):
        self.a = analyzer
        self.is_orig = is_orig
        self.buf = b""
        """The start of a record not complete yet."""
        self.hs = b""
        """The start of a handshake message not complete yet."""
        self.encrypted = False
        self.ccs = False
        self.appdata = False

    def data(self, data: bytes, ts: int) -> None:
        a = self.a
        if a.done:
            return
        buf = self.buf + data if self.buf else data
        i, n = 0, len(buf)
        while n - i >= 5 and not a.done:
            ctype = buf[i]
            length = (buf[i + 3] << 8) | buf[i + 4]
            if not (20 <= ctype <= 24) or buf[i + 1] != 3 or length > MAX_RECORD:
                a.malformed(ts)
                return
            if n - i - 5 < length:
                break
            self.record(ctype, buf[i + 5:i + 5 + length], ts)
            i += 5 + length
        self.buf = buf[i:] if i < n else b""

    def record(self, ctype: int, body: bytes, ts: int) -> None:
        a = self.a
        if ctype == HANDSHAKE:
            if self.encrypted:
                return  # Finished and later messages: ciphertext
            hs = self.hs + body if self.hs else body
            i, n = 0, len(hs)
            while n - i >= 4 and not a.done:
                length = int.from_bytes(hs[i + 1:i + 4], "big")
                if length > MAX_HANDSHAKE:
                    a.malformed(ts)
                    return
                if n - i - 4 < length:
                    break
                a.message(self.is_orig, hs[i], hs[i + 4:i + 4 + length], ts)
                i += 4 + length
            self.hs = hs[i:] if i < n else b""
        elif ctype == CCS:
            self.ccs = True
            sh = a.sh
            # TLS 1.3 sends a dummy ChangeCipherSpec for middleboxes (RFC 8446 D.4), also
            # right after a HelloRetryRequest, before the real ServerHello: not encryption.
            if not (a.retry or (sh is not None and sh.version >= 0x0304)):
                self.encrypted = True
            a.progress(ts)
        elif ctype == ALERT:
            if not self.encrypted and len(body) >= 2:
                a.alert_seen(body[0], body[1], ts)
        elif ctype == APPDATA:
            self.appdata = self.encrypted = True
            a.progress(ts)

    def gap(self, n: int, ts: int) -> None:
        if not self.a.done:
            self.a.tags.append("gap")
            self.a.emit()

    def end(self, ts: int) -> None:
        pass


class TlsState(msgspec.Struct, tag="tls", array_like=True):
    """A TlsAnalyzer's state between batches: plain fields; the parsed hellos are kept as
    their raw message bytes and parsed again when restored."""

    client_hello: bytes | None
    server_hello: bytes | None
    ts_ns: int | None
    certs: list[bytes]
    alert: str | None
    failed: bool
    tags: list[str]
    orig_buf: bytes
    orig_hs: bytes
    orig_flags: int
    resp_buf: bytes
    resp_hs: bytes
    resp_flags: int
    orig_next: int | None
    resp_next: int | None
    orig_dir: DirectionState | None = None
    """Each direction's reassembly, with out-of-order segments held."""
    resp_dir: DirectionState | None = None


class TlsAnalyzer(HandshakeAnalyzer):
    """One TCP connection's TLS handshake (the interface: stream_app/core/protocols.py)."""

    __slots__ = ("ch", "ch_raw", "sh", "sh_raw", "certs", "alert", "failed")

    @property
    def retry(self) -> bool:
        return "hello_retry" in self.tags

    def __init__(self, l7, flow, isn_orig, isn_resp, midstream: bool):
        super().__init__(l7, flow, isn_orig, isn_resp, _Side)
        self.ch: ClientHello | None = None
        self.ch_raw: bytes | None = None
        self.sh: ServerHello | None = None
        self.sh_raw: bytes | None = None
        self.certs: list[bytes] = []
        self.alert: str | None = None
        self.failed = False

    # --- from the sides -------------------------------------------------------------------
    def message(self, is_orig: bool, mtype: int, body: bytes, ts: int) -> None:
        try:
            if is_orig and mtype == 1 and self.ch is None:
                self.ch = parse_client_hello(body)
                self.ch_raw = body
                self.ts_ns = ts
            elif not is_orig and mtype == 2:
                sh = parse_server_hello(body)
                if sh.retry:
                    if "hello_retry" not in self.tags:
                        self.tags.append("hello_retry")
                    return  # the real ServerHello follows the second ClientHello
                self.sh, self.sh_raw = sh, body
                if self.ts_ns is None:
                    self.ts_ns = ts
            elif not is_orig and mtype == 11 and self.sh is not None and self.sh.version < 0x0304:
                r = _Reader(body)
                chain = _Reader(r.vec(3))
                while chain.left() and len(self.certs) < 16:
                    self.certs.append(chain.vec(3))
        except Malformed:
            self.malformed(ts)
            return
        self.progress(ts)

    def alert_seen(self, level: int, desc: int, ts: int) -> None:
        if self.alert is None:
            self.alert = ALERTS.get(desc, str(desc))
        if level == 2 or desc == 0:  # fatal, or a close before the handshake ended
            self.failed = True
            self.tags.append("failed")
            self.emit()

    def progress(self, ts: int) -> None:
        """Whether the handshake is over as far as the capture can show."""
        if self.done or self.ch is None or self.sh is None:
            return
        o, s = self.orig.consumer, self.resp.consumer
        if self.sh.version >= 0x0304 or (o.ccs and s.ccs) or (o.appdata and s.appdata):
            self.emit()

    def malformed(self, ts: int) -> None:
        if not self.done:
            self.tags.append("malformed")
            self.emit()

    # --- the record -----------------------------------------------------------------------
    def established(self) -> bool:
        if self.failed or self.ch is None or self.sh is None:
            return False
        o, s = self.orig.consumer, self.resp.consumer
        return self.sh.version >= 0x0304 or (o.ccs and s.ccs) or (o.appdata and s.appdata)

    def emit(self) -> None:
        if self.done:
            return
        self.done = True
        f = self.flow
        ch, sh = self.ch, self.sh
        tags = self.tags
        if ch is None:
            tags.append("no_client_hello")
        if sh is None:
            tags.append("no_server_hello")
        elif not self.established() and not self.failed and "incomplete" not in tags:
            tags.append("incomplete")
        chain = []
        for der in self.certs:
            try:
                chain.append(parse_certificate(der))
            except Exception:  # cryptography rejects it: say so, keep the rest
                if "bad_certificate" not in tags:
                    tags.append("bad_certificate")
        resumed = False
        if sh is not None:
            if sh.version >= 0x0304:
                resumed = sh.psk
            else:
                resumed = bool(sh.session_id) and ch is not None and sh.session_id == ch.session_id
        src, dst = f.addr_texts()
        ts = self.ts_ns if self.ts_ns is not None else f.last_ns
        self.l7.tls.append(TlsHandshake(
            f"{f.conn_uid_cache()}-1", ts / NS, f.cid_cache(), f.vni, src, f.orig_port,
            dst, f.resp_port,
            VERSIONS.get(sh.version, f"0x{sh.version:04x}") if sh else None,
            CIPHERS.get(sh.cipher, f"0x{sh.cipher:04x}") if sh else None,
            ch.server_name if ch else None, list(ch.alpn) if ch else [],
            sh.alpn if sh else None, ja4(ch) if ch else None, ja4s(sh) if sh else None,
            resumed, self.established(), self.alert, chain, tags, f.direction))
        self.certs = []
        self.orig.consumer.buf = self.resp.consumer.buf = b""
        if f.l7 is self:
            self.l7.detach(f)

    # --- state without pickle -------------------------------------------------------------
    def to_state(self) -> TlsState:
        o, s = self.orig.consumer, self.resp.consumer
        od, rd = self.orig.to_state(), self.resp.to_state()
        return TlsState(self.ch_raw, self.sh_raw, self.ts_ns, list(self.certs), self.alert,
                        self.failed, list(self.tags), o.buf, o.hs, _flags(o), s.buf, s.hs,
                        _flags(s), self.orig.next_seq, self.resp.next_seq, od, rd)

    @classmethod
    def from_state(cls, st: TlsState, l7, flow) -> TlsAnalyzer:
        a = cls(l7, flow, None, None, False)
        if st.orig_dir is not None:
            a.orig = Direction.from_state(st.orig_dir, a.orig.consumer, l7.stats)
        if st.resp_dir is not None:
            a.resp = Direction.from_state(st.resp_dir, a.resp.consumer, l7.stats)
        a.orig.next_seq, a.resp.next_seq = st.orig_next, st.resp_next
        a.ch_raw, a.sh_raw, a.ts_ns = st.client_hello, st.server_hello, st.ts_ns
        a.ch = parse_client_hello(st.client_hello) if st.client_hello is not None else None
        a.sh = parse_server_hello(st.server_hello) if st.server_hello is not None else None
        a.certs, a.alert, a.failed, a.tags = list(st.certs), st.alert, st.failed, list(st.tags)
        for side, buf, hs, fl in ((a.orig.consumer, st.orig_buf, st.orig_hs, st.orig_flags),
                                  (a.resp.consumer, st.resp_buf, st.resp_hs, st.resp_flags)):
            side.buf, side.hs = buf, hs
            side.encrypted, side.ccs, side.appdata = bool(fl & 1), bool(fl & 2), bool(fl & 4)
        return a


def _flags(side: _Side) -> int:
    return side.encrypted | side.ccs << 1 | side.appdata << 2
