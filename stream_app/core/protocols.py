"""The application protocols recognised by content, besides HTTP (stream_app/core/l7.py), and
the port guesses used only when no content decided.

A TCP protocol is recognised from the first bytes of either side of a connection (held across
segments while undecided); a UDP protocol from a flow's first datagrams. Each entry names the
analyzer class that takes the flow over once recognised. The analyzer interface is described
in docs/architecture.md ("Application analyzers"); in short:

* TCP: ``Analyzer(l7, flow, isn_orig, isn_resp, midstream)``, ``packet(r, is_orig)`` for
  every segment with data or FIN (or while one of its ``orig``/``resp`` reassembly
  Directions holds out-of-order data; ``waiting`` is always None), ``finish(ts_ns)`` at the
  flow's end, ``abandon()`` after the analyzer raised (emit what it has, tagged
  analyzer_error). An analyzer whose work is done (a handshake seen) emits its record and
  calls ``l7.detach(flow)``: the rest of the connection then costs nothing.
* UDP: ``Analyzer(l7, flow)``, ``packet(r, is_orig)`` per datagram, ``finish``/``abandon``.
* Both: a ``State`` class attribute (a msgspec Struct with ``tag="<protocol>"``), ``to_state()``
  returning one, and the classmethod ``from_state(state, l7, flow)``, so that the flow's state
  is stored as typed records (stream_app/state/codec.py decodes the union of the analyzers
  listed here and HttpAnalyzer: l7.analyzer_classes(); docs/architecture.md).

Verdicts: ``client(data)`` / ``server(data)`` get the contiguous first bytes one side sent
and answer True (this protocol), False (not this protocol) or None (too few bytes yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class TcpProtocol:
    name: str
    client: Callable[[bytes], bool | None]
    server: Callable[[bytes], bool | None]
    analyzer: type | None
    """None: recognised and named, not analysed further."""


@dataclass(frozen=True)
class UdpProtocol:
    name: str
    verdict: Callable[[bytes, bool, object], bool]
    """(payload, is_orig, flow) -> whether the datagram is this protocol."""
    analyzer: type | None


# --- verdicts for protocols named but not analysed here --------------------------------
def _prefix_verdict(magic: bytes):
    def verdict(data: bytes) -> bool | None:
        if len(data) < len(magic):
            return None if magic.startswith(data) else False
        return data.startswith(magic)
    return verdict


ssh_verdict = _prefix_verdict(b"SSH-")


def _tls_verdict(handshake_type: int):
    def verdict(data: bytes) -> bool | None:
        # A handshake record (22) of SSL 3.0 .. TLS 1.3 framing (3, 0..4) holding, first, a
        # ClientHello (1) or ServerHello (2).
        want = (22, 3)
        for i, b in enumerate(data[:2]):
            if b != want[i]:
                return False
        if len(data) < 3:
            return None
        if data[2] > 4:
            return False
        if len(data) < 6:
            return None
        return data[5] == handshake_type
    return verdict


tls_client_verdict = _tls_verdict(1)
tls_server_verdict = _tls_verdict(2)


def tcp_protocols() -> list[TcpProtocol]:
    """The TCP protocols tried after HTTP, in order."""
    out = []
    try:
        from stream_app.core.tls import TlsAnalyzer
    except ImportError:  # until the TLS analyzer lands: named, not analysed
        TlsAnalyzer = None
    out.append(TcpProtocol("tls", tls_client_verdict, tls_server_verdict, TlsAnalyzer))
    try:
        from stream_app.core.ssh import SshAnalyzer
    except ImportError:
        SshAnalyzer = None
    out.append(TcpProtocol("ssh", ssh_verdict, ssh_verdict, SshAnalyzer))
    try:
        from stream_app.core.dns import DnsTcpAnalyzer, dns_tcp_client_verdict, \
            dns_tcp_server_verdict
        out.append(TcpProtocol("dns", dns_tcp_client_verdict, dns_tcp_server_verdict,
                               DnsTcpAnalyzer))
    except ImportError:
        pass
    return out


def udp_protocols() -> list[UdpProtocol]:
    """The UDP protocols tried on a flow's first datagrams, in order."""
    out = []
    try:
        from stream_app.core.dns import DnsUdpAnalyzer, dns_udp_verdict
        out.append(UdpProtocol("dns", dns_udp_verdict, DnsUdpAnalyzer))
    except ImportError:
        pass
    return out


PORT_GUESSES: dict[tuple[int, int], str] = {
    (6, 22): "ssh", (6, 53): "dns", (17, 53): "dns", (6, 443): "tls", (6, 853): "tls",
    (17, 123): "ntp", (6, 80): "http", (6, 8080): "http", (17, 67): "dhcp", (17, 68): "dhcp",
    (6, 25): "smtp", (6, 587): "smtp", (6, 3306): "mysql", (6, 5432): "postgresql",
    (6, 6379): "redis", (6, 9092): "kafka", (6, 389): "ldap", (6, 636): "ldaps",
    (17, 514): "syslog", (17, 161): "snmp", (6, 3389): "rdp", (6, 445): "smb",
    (17, 4789): "vxlan", (17, 443): "quic", (6, 5353): "mdns", (17, 5353): "mdns",
}
"""Well-known ports, as a last resort for flows that carried data no analyzer recognised
(app_proto_source "port"). A connection attempt with no data is named nothing."""


def port_guess(proto: int, resp_port: int, orig_port: int) -> str | None:
    return PORT_GUESSES.get((proto, resp_port)) or PORT_GUESSES.get((proto, orig_port))
