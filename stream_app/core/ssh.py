"""SSH sessions: both identification strings and both SSH_MSG_KEXINIT offers of one TCP
connection (the only clear-text part of SSH), turned into one SshSession record with HASSH
and HASSHServer fingerprints (salesforce/hassh) and the negotiated algorithms.

Hand-written framing (RFC 4253 4.2 and 6): a version line, then binary packets; only the
first packet (KEXINIT) is read. Bounded: at most MAX_PRE bytes of lines before the version
line, a version line of at most 255 bytes, a packet of at most MAX_PACKET bytes; past any
bound the flow is tagged malformed and left. After both KEXINITs the record is emitted and
the flow detached: the encrypted session costs nothing.
"""

from __future__ import annotations

import hashlib

import msgspec

from schemas.records import SshSession
from stream_app.core.handshake import HandshakeAnalyzer
from stream_app.core.reassembly import Direction, DirectionState

NS = 1_000_000_000
MAX_LINE = 255
MAX_PRE = 8192
"""Lines a server may send before its version line (RFC 4253 4.2)."""
MAX_PACKET = 35000
"""RFC 4253 6.1: implementations must handle packets of 35000 bytes; a KEXINIT is far less."""
KEXINIT = 20
NAME_LISTS = ("kex", "host_key", "enc_c2s", "enc_s2c", "mac_c2s", "mac_s2c", "comp_c2s",
              "comp_s2c", "lang_c2s", "lang_s2c")


class KexInit(msgspec.Struct):
    lists: list[list[str]]
    """The ten name-lists in RFC 4253 7.1 order (NAME_LISTS)."""

    def get(self, name: str) -> list[str]:
        return self.lists[NAME_LISTS.index(name)]


def parse_kexinit(payload: bytes) -> KexInit | None:
    """The name-lists of a KEXINIT payload (message type byte first); None when cut short."""
    if not payload or payload[0] != KEXINIT:
        return None
    i = 17  # type, 16-byte cookie
    lists = []
    for _ in NAME_LISTS:
        if i + 4 > len(payload):
            return None
        n = int.from_bytes(payload[i:i + 4], "big")
        i += 4
        if i + n > len(payload):
            return None
        text = payload[i:i + n].decode("ascii", "replace")
        lists.append(text.split(",") if text else [])
        i += n
    return KexInit(lists)


def hassh(k: KexInit, client: bool) -> str:
    """HASSH (client) or HASSHServer: md5 of "kex;ciphers;macs;compression", the lists of
    the sender's own direction (client to server for the client, server to client for the
    server), as sent."""
    d = "c2s" if client else "s2c"
    text = ";".join(",".join(k.get(n)) for n in ("kex", f"enc_{d}", f"mac_{d}", f"comp_{d}"))
    return hashlib.md5(text.encode()).hexdigest()


def _negotiate(c: list[str], s: list[str]) -> str | None:
    """RFC 4253 7.1: the first algorithm of the client's list that the server also lists."""
    ss = set(s)
    return next((a for a in c if a in ss), None)


class _Side:
    __slots__ = ("a", "is_orig", "buf", "banner", "kex", "pre")

    def __init__(self, analyzer: SshAnalyzer, is_orig: bool):
        self.a = analyzer
        self.is_orig = is_orig
        self.buf = b""
        self.banner: str | None = None
        self.kex: KexInit | None = None
        self.pre = 0
        """Bytes of lines seen before the version line."""

    def data(self, data: bytes, ts: int) -> None:
        a = self.a
        if a.done or self.kex is not None:
            return
        buf = self.buf + data if self.buf else data
        while self.banner is None:
            nl = buf.find(b"\n", 0, MAX_LINE + 1)
            if nl < 0:
                if len(buf) > MAX_LINE:
                    a.malformed()
                    return
                self.buf = buf
                return
            line = buf[:nl].rstrip(b"\r")
            buf = buf[nl + 1:]
            if line.startswith(b"SSH-"):
                self.banner = line.decode("utf-8", "backslashreplace")
                if a.ts_ns is None:
                    a.ts_ns = ts
            else:
                self.pre += nl + 1
                if self.pre > MAX_PRE or self.is_orig:  # a client sends its version first
                    a.malformed()
                    return
        if len(buf) >= 5:
            plen = int.from_bytes(buf[:4], "big")
            if plen > MAX_PACKET or plen < 2:
                a.malformed()
                return
            if len(buf) >= 4 + plen:
                pad = buf[4]
                payload = buf[5:4 + plen - pad] if pad < plen else b""
                self.kex = parse_kexinit(payload)
                self.buf = b""
                if self.kex is None:
                    a.tags.append("no_kexinit")
                    a.emit()
                else:
                    a.progress()
                return
        self.buf = buf

    def gap(self, n: int, ts: int) -> None:
        if not self.a.done:
            self.a.tags.append("gap")
            self.a.emit()

    def end(self, ts: int) -> None:
        pass


class SshState(msgspec.Struct, tag="ssh", array_like=True):
    """An SshAnalyzer's state between batches (plain fields only)."""

    ts_ns: int | None
    tags: list[str]
    orig_buf: bytes
    orig_banner: str | None
    orig_kex: list[list[str]] | None
    orig_pre: int
    resp_buf: bytes
    resp_banner: str | None
    resp_kex: list[list[str]] | None
    resp_pre: int
    orig_next: int | None
    resp_next: int | None
    orig_dir: DirectionState | None = None
    """Each direction's reassembly, with out-of-order segments held."""
    resp_dir: DirectionState | None = None


class SshAnalyzer(HandshakeAnalyzer):
    """One TCP connection's SSH banners and key-exchange offers."""

    __slots__ = ()

    def __init__(self, l7, flow, isn_orig, isn_resp, midstream: bool):
        super().__init__(l7, flow, isn_orig, isn_resp, _Side)

    def progress(self) -> None:
        if self.orig.consumer.kex is not None and self.resp.consumer.kex is not None:
            self.emit()

    def malformed(self) -> None:
        if not self.done:
            self.tags.append("malformed")
            self.emit()

    def emit(self) -> None:
        if self.done:
            return
        self.done = True
        f = self.flow
        c, s = self.orig.consumer, self.resp.consumer
        tags = self.tags
        if c.banner is None:
            tags.append("no_client_banner")
        if s.banner is None:
            tags.append("no_server_banner")
        if (c.kex is None or s.kex is None) and "no_kexinit" not in tags:
            tags.append("no_kexinit")
        neg: list[str | None] = [None] * 5
        if c.kex is not None and s.kex is not None:
            neg = [_negotiate(c.kex.get(n), s.kex.get(n))
                   for n in ("kex", "host_key", "enc_c2s", "mac_c2s", "comp_c2s")]
        src, dst = f.addr_texts()
        ts = self.ts_ns if self.ts_ns is not None else f.last_ns
        self.l7.ssh.append(SshSession(
            f.conn_uid_cache(), ts / NS, f.cid_cache(), f.vni, src, f.orig_port, dst,
            f.resp_port, c.banner, s.banner,
            hassh(c.kex, True) if c.kex else None, hassh(s.kex, False) if s.kex else None,
            *neg, tags, f.direction))
        c.buf = s.buf = b""
        if f.l7 is self:
            self.l7.detach(f)

    def to_state(self) -> SshState:
        c, s = self.orig.consumer, self.resp.consumer
        od, rd = self.orig.to_state(), self.resp.to_state()
        return SshState(self.ts_ns, list(self.tags), c.buf, c.banner,
                        c.kex.lists if c.kex else None, c.pre, s.buf, s.banner,
                        s.kex.lists if s.kex else None, s.pre, self.orig.next_seq,
                        self.resp.next_seq, od, rd)

    @classmethod
    def from_state(cls, st: SshState, l7, flow) -> SshAnalyzer:
        a = cls(l7, flow, None, None, False)
        if st.orig_dir is not None:
            a.orig = Direction.from_state(st.orig_dir, a.orig.consumer, l7.stats)
        if st.resp_dir is not None:
            a.resp = Direction.from_state(st.resp_dir, a.resp.consumer, l7.stats)
        a.orig.next_seq, a.resp.next_seq = st.orig_next, st.resp_next
        a.ts_ns, a.tags = st.ts_ns, list(st.tags)
        for side, buf, banner, kex, pre in (
                (a.orig.consumer, st.orig_buf, st.orig_banner, st.orig_kex, st.orig_pre),
                (a.resp.consumer, st.resp_buf, st.resp_banner, st.resp_kex, st.resp_pre)):
            side.buf, side.banner, side.pre = buf, banner, pre
            side.kex = KexInit(kex) if kex is not None else None
        return a
