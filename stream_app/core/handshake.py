"""The shared part of the analyzers that read a TCP connection's opening exchange as two byte
streams and stop once it is seen (tls.py, ssh.py): both directions reassembled, a peer's ACK
of bytes the capture never delivered turned into a gap at once, one record made exactly once
(at the handshake's end, the flow's end, or after a fault), then the flow detached."""

from __future__ import annotations

from stream_app.core.reassembly import Direction

SYN = 0x02
ACK = 0x10


class HandshakeAnalyzer:
    __slots__ = ("l7", "flow", "orig", "resp", "ts_ns", "tags", "done")
    waiting = None
    """Never waits for the other direction (only the HTTP analyzer orders by ACKs)."""

    def __init__(self, l7, flow, isn_orig, isn_resp, side: type):
        self.l7 = l7
        self.flow = flow
        cap = l7.config.reassembly_cap
        self.orig = Direction(side(self, True), cap, l7.stats)
        self.resp = Direction(side(self, False), cap, l7.stats)
        if isn_orig is not None:
            self.orig.syn(isn_orig)
        if isn_resp is not None:
            self.resp.syn(isn_resp)
        self.ts_ns: int | None = None
        self.tags: list[str] = []
        self.done = False

    def packet(self, r, is_orig: bool) -> None:
        if is_orig:
            d, peer = self.orig, self.resp
        else:
            d, peer = self.resp, self.orig
        if r.tcp_flags & ACK and peer.pending:
            # Acknowledged but not captured: the hole is lost, not late (a gap now, not at
            # the flow's end).
            peer.acked(r.ack, r.ts_ns)
        if r.tcp_flags & SYN:
            d.syn(r.seq)
        elif r.payload_len:
            d.segment(r.seq, r.payload, r.payload_len, r.ts_ns)

    def finish(self, ts: int) -> None:
        if self.done:
            return
        self.orig.end(ts)
        self.resp.end(ts)
        if not self.done:
            self.emit()

    def abandon(self) -> None:
        if not self.done:
            self.tags.append("analyzer_error")
            self.emit()

    def emit(self) -> None:
        raise NotImplementedError
