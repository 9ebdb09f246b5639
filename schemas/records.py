"""MirrorScope record contracts, version 1.

Every stage passes these plain msgspec Structs. On the wire (Kafka, Kinesis) they travel as
msgpack arrays (``array_like``), which keeps a packet record around 60 bytes plus payload; in
files they are JSON objects with the field names below. A field is only ever added at the end,
with a default, and a breaking change bumps the ``*_VERSION`` constant, never silently.
"""

from __future__ import annotations

from typing import Literal

import msgspec

PACKET_BATCH_VERSION = 1
FLOW_RECORD_VERSION = 3
"""2: adds start_time/end_time (sub-second); version 1 records read as version 2 with them null.
3: adds app_proto_source and TCP health (handshake RTTs, retransmissions, reordering, zero
windows, missed bytes); older records read as version 3 with them null."""
HTTP_RECORD_VERSION = 1
ALERT_RECORD_VERSION = 1
DNS_RECORD_VERSION = 1
TLS_RECORD_VERSION = 1
SSH_RECORD_VERSION = 1

# Why the flow stopped accumulating into this record.
EndReason = Literal["fin", "rst", "idle", "active", "eof", "evicted"]
"""evicted: ended early to keep the flows held under FlowConfig.max_flows."""
Direction = Literal["ingress", "egress"]


class PacketRecord(msgspec.Struct, array_like=True, gc=False):
    """One decoded packet of the mirrored (inner) traffic.

    Addresses are raw network-order bytes (4 or 16): they are hashed and compared far more
    often than printed, and cost 5 or 17 bytes on the wire instead of up to 40.
    """

    ts_ns: int
    """Capture time, nanoseconds since the Unix epoch."""
    vni: int | None
    """VXLAN/GENEVE virtual network id of the innermost tunnel; None when not encapsulated.
    On AWS this names the mirror session."""
    mirror_src: bytes | None
    """Outer source address of the innermost tunnel (on AWS the mirrored ENI's primary IP);
    None when not encapsulated."""
    ip_version: int
    src: bytes
    dst: bytes
    proto: int
    """IP protocol number of the transport header (after IPv6 extension headers)."""
    sport: int
    """Source port; for ICMP/ICMPv6 the message type; 0 where there is none (or a non-first fragment)."""
    dport: int
    """Destination port; for ICMP/ICMPv6 the message code; 0 where there is none."""
    tcp_flags: int
    """TCP flag byte (FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ECE=64 CWR=128); 0 for other protocols."""
    seq: int
    ack: int
    wire_len: int
    """Length of the inner IP packet on the wire, from its header (what VPC Flow Logs count)."""
    cap_len: int
    """Bytes of the inner IP packet present in the capture (less than wire_len when truncated)."""
    payload_len: int
    """Transport payload length per the headers (TCP/UDP data bytes on the wire)."""
    payload: bytes
    """Captured transport payload, bounded by the payload policy (may be shorter than payload_len)."""
    truncated: bool = False
    """The capture (snap length, AWS packet length) cut this packet short."""
    fragment: bool = False
    """An IPv4/IPv6 fragment; non-first fragments carry no ports."""
    direction: Direction | None = None
    """Relative to the mirrored ENI: egress when the inner source is its address, where known."""
    window: int = -1
    """TCP receive window field as sent (unscaled: only zero matters to the flow table); 0 for
    other protocols; -1 when not known: a TCP header cut before it, or a batch from a collector
    older than this field (appended last with a default so those still decode; -1 and not 0 so
    their segments are not all taken for zero-window events)."""


class PacketBatch(msgspec.Struct, array_like=True):
    """What one Kafka message or Kinesis record carries: records of a single partition, in
    capture order, so per-flow order is kept."""

    version: int
    partition_key: bytes
    records: list[PacketRecord]
    collector: str = ""
    """Identifies the producing collector process (for loss accounting)."""
    seq: int = 0
    """The collector's batch sequence number."""
    end_ns: int = 0
    """Non-zero on the marker a collector sends to every partition when a replayed capture
    ends: the capture's last packet time. Workers then report the partition's open flows,
    as embedded mode does at the end of a file. Live collectors never send it."""


class FlowRecord(msgspec.Struct, omit_defaults=False):
    """A bidirectional flow (a conversation), with the VPC Flow Logs v5 fields in snake_case.

    Unlike VPC Flow Logs, which log each direction as its own record, one record covers both
    directions: srcaddr/srcport is the originator, ``packets``/``bytes`` are the totals of both
    directions, and orig_*/resp_* split them. Fields that cannot be known from packets alone
    (account, ENI, VPC ... until VNI enrichment fills them) are null.
    """

    # --- VPC Flow Logs v5, in its order ---
    version: int
    account_id: str | None
    interface_id: str | None
    srcaddr: str
    dstaddr: str
    srcport: int
    dstport: int
    protocol: int
    packets: int
    bytes: int
    start: int
    """Unix seconds of the first packet, whole (as VPC Flow Logs); start_time has the fraction."""
    end: int
    """Unix seconds of the last packet, whole (as VPC Flow Logs); end_time has the fraction."""
    action: str | None
    """ACCEPT/REJECT cannot be known from a mirror copy: null."""
    log_status: str
    vpc_id: str | None
    subnet_id: str | None
    instance_id: str | None
    tcp_flags: int
    """Bitwise OR of the TCP flags of every packet in both directions."""
    type: str
    """IPv4 or IPv6."""
    pkt_srcaddr: str
    pkt_dstaddr: str
    region: str | None
    az_id: str | None
    sublocation_type: str | None
    sublocation_id: str | None
    pkt_src_aws_service: str | None
    pkt_dst_aws_service: str | None
    flow_direction: str | None
    traffic_path: int | None
    # --- MirrorScope ---
    flow_id: str
    """Deterministic: the same packets always give the same id (replays de-duplicate on it)."""
    community_id: str
    """Community ID v1, seed 0: joins with Zeek, Suricata and Arkime records."""
    vni: int | None
    mirror_source: str | None
    orig_pkts: int
    orig_bytes: int
    resp_pkts: int
    resp_bytes: int
    duration: float
    """Seconds from the first to the last packet."""
    conn_state: str
    """Zeek's conn_state vocabulary (S0, S1, SF, REJ, RSTO, ...)."""
    history: str
    """Zeek's history letters (upper case = originator; ^ = flipped): TCP S h A D a d F f R r;
    UDP D d (a datagram from each side, as Zeek's UDP analyzer); ICMP and others none."""
    app_proto: str | None
    end_reason: EndReason
    truncated_pkts: int
    fragment_pkts: int
    schema_version: int = FLOW_RECORD_VERSION
    # --- schema version 2 ---
    start_time: float | None = None
    """Unix seconds of the first packet with its fraction (microseconds kept); null in
    version 1 records."""
    end_time: float | None = None
    """Unix seconds of the last packet with its fraction; null in version 1 records."""
    # --- schema version 3 ---
    app_proto_source: str | None = None
    """How ``app_proto`` was decided: "content" (the flow's bytes parsed as the protocol, on
    any port) or "port" (a guess from a well-known port when no content decided it)."""
    handshake_rtt_resp: float | None = None
    """TCP: seconds from the SYN to the SYN-ACK as the mirror saw them (the tap to the
    responder and back); null when the handshake was not seen."""
    handshake_rtt_orig: float | None = None
    """TCP: seconds from the SYN-ACK to the originator's ACK (the tap to the originator and
    back)."""
    orig_retrans_pkts: int | None = None
    """TCP: originator segments carrying only bytes already seen (retransmissions)."""
    orig_retrans_bytes: int | None = None
    resp_retrans_pkts: int | None = None
    resp_retrans_bytes: int | None = None
    orig_ooo_pkts: int | None = None
    """TCP: originator segments that arrived ahead of a hole (out of order)."""
    resp_ooo_pkts: int | None = None
    orig_zero_windows: int | None = None
    """TCP: times the originator advertised a zero receive window."""
    resp_zero_windows: int | None = None
    missed_bytes: int | None = None
    """TCP: bytes of either direction the capture never delivered although the peer
    acknowledged them or later data shows they were sent (Zeek's missed_bytes)."""


# gc=False: a transaction holds only text, numbers and a list of tags, so it can be in no
# reference cycle; a capture makes one per request, and tracking them cost the collector time.
class HttpTransaction(msgspec.Struct, omit_defaults=False, gc=False):
    """One HTTP/1.x request and its response (either may be missing: see ``tags``), in the
    spirit of Zeek's http.log. Bodies are counted, never stored; credentials and cookies are
    redacted unless the deployment chose to keep them."""

    http_id: str
    """Deterministic: the connection's id (a hash of its Community ID, VNI and first packet
    time), a dash, and this transaction's depth in it."""
    ts: float
    """Unix seconds of the request's first byte (of the response's, when no request was seen)."""
    community_id: str
    vni: int | None
    srcaddr: str
    """The client."""
    srcport: int
    dstaddr: str
    """The server."""
    dstport: int
    trans_depth: int
    """1 for the first transaction on the connection, 2 for the next ..."""
    method: str | None
    host: str | None
    uri: str | None
    version: str | None
    """The request's HTTP version ("1.1", "1.0", "0.9")."""
    user_agent: str | None
    referrer: str | None
    status_code: int | None
    status_msg: str | None
    request_body_len: int
    response_body_len: int
    request_content_type: str | None
    response_content_type: str | None
    latency: float | None
    """Seconds from the request's first byte to the response's first byte."""
    tags: list[str]
    """What was odd: midstream, gap, truncated, no_response, no_request, pipelined, http09,
    interim_100, tunnel, upgrade, malformed_request, malformed_response, malformed_chunked,
    bad_content_length, conflicting_content_length, te_and_cl."""
    authorization: str | None
    proxy_authorization: str | None
    cookie: str | None
    set_cookie: str | None
    flow_direction: str | None
    schema_version: int = HTTP_RECORD_VERSION


class Alert(msgspec.Struct, omit_defaults=False):
    """One detection (stream_app/core/detectors.py; docs/detectors/). The columns of the Glue
    ``alerts`` table (schemas/athena/alerts.sql, terraform/modules/storage/tables.tf) in order."""

    alert_id: str
    """Deterministic: a hash of the type, the subject (the source; the first target when the
    source is unknown) and the window start, so a replay gives the same id."""
    ts: float
    """Unix seconds (capture time) of the observation that crossed the threshold."""
    type: str
    """port_scan, host_sweep, syn_flood, unanswered_connections, volume_spike, beaconing,
    http_attack."""
    severity: str
    """info, low, medium, high or critical."""
    source: str | None
    """The offending address; None when it cannot be named (e.g. a spoofed SYN flood)."""
    targets: list[str]
    """Addresses, address:port or proto/port the alert is about (at most 20)."""
    vni: int | None
    interface_id: str | None
    window_start: float
    window_end: float
    """The detection window (Unix seconds, capture time)."""
    evidence: dict[str, int]
    """Counts that crossed the thresholds, as of the alert."""
    summary: str
    """One line for humans."""
    schema_version: int = ALERT_RECORD_VERSION


class DnsAnswer(msgspec.Struct, omit_defaults=False):
    """One resource record of a DNS response's answer section."""

    name: str
    type: str
    """The type's mnemonic (A, AAAA, CNAME, ...), or TYPE<n> for one without a name."""
    ttl: int
    data: str
    """The record's data as text: an address, a name, TXT strings joined, or hex for types
    not decoded."""


class DnsTransaction(msgspec.Struct, omit_defaults=False):
    """One DNS query and its response (either may be missing: see ``tags``), in the spirit of
    Zeek's dns.log, over UDP or TCP."""

    dns_id: str
    """Deterministic: the connection's id, a dash, and the query's order in the flow."""
    ts: float
    """Unix seconds of the query (of the response, when no query was seen)."""
    community_id: str
    vni: int | None
    srcaddr: str
    """The client."""
    srcport: int
    dstaddr: str
    """The server."""
    dstport: int
    transport: str
    """udp or tcp."""
    trans_id: int
    query: str | None
    """The first question's name, without the trailing dot."""
    qclass: int | None
    qtype: int | None
    qtype_name: str | None
    rcode: int | None
    rcode_name: str | None
    """NOERROR, NXDOMAIN, SERVFAIL, ...; null without a response."""
    authoritative: bool
    truncated: bool
    """The TC bit of the response (or of the query): the answer did not fit."""
    recursion_desired: bool
    recursion_available: bool
    answers: list[DnsAnswer]
    rtt: float | None
    """Seconds from the query to its response."""
    tags: list[str]
    """What was odd: no_response, no_query, malformed, ..."""
    flow_direction: str | None
    schema_version: int = DNS_RECORD_VERSION


class TlsCertificate(msgspec.Struct, omit_defaults=False):
    """One certificate of a chain the server sent in the clear (TLS 1.2 and below)."""

    subject: str
    """RFC 4514 text."""
    issuer: str
    serial: str
    """Hex."""
    not_before: float
    """Unix seconds."""
    not_after: float
    sans: list[str]
    """DNS names and IP addresses of the subjectAltName extension."""
    sha256: str
    """Hex digest of the DER certificate."""
    self_signed: bool


class TlsHandshake(msgspec.Struct, omit_defaults=False):
    """One TLS handshake: what the client offered, what the server chose, the fingerprints
    and, when sent in the clear, the certificate chain (in the spirit of Zeek's ssl.log and
    x509.log)."""

    tls_id: str
    """Deterministic: the connection's id, a dash, and the handshake's order in it."""
    ts: float
    """Unix seconds of the ClientHello (of the ServerHello, when the client's was not seen)."""
    community_id: str
    vni: int | None
    srcaddr: str
    """The client."""
    srcport: int
    dstaddr: str
    """The server."""
    dstport: int
    version: str | None
    """The negotiated version (TLSv1.3 from supported_versions, else the ServerHello's)."""
    cipher: str | None
    """The chosen cipher suite's IANA name (0x.... when unnamed)."""
    server_name: str | None
    """SNI."""
    alpn_offered: list[str]
    alpn: str | None
    """The protocol the server chose."""
    ja4: str | None
    """FoxIO JA4 of the ClientHello."""
    ja4s: str | None
    """FoxIO JA4S of the ServerHello."""
    resumed: bool
    """The server accepted a session resumption (session id or PSK)."""
    established: bool
    """Both sides' handshake completed as far as the capture shows (no fatal alert first)."""
    alert: str | None
    """The first alert's description, when one was sent in the clear during the handshake."""
    cert_chain: list[TlsCertificate]
    tags: list[str]
    """What was odd: no_client_hello, no_server_hello, failed, malformed, gap, ..."""
    flow_direction: str | None
    schema_version: int = TLS_RECORD_VERSION


class SshSession(msgspec.Struct, omit_defaults=False):
    """One SSH connection's banners and key-exchange offers (in the spirit of Zeek's
    ssh.log), with HASSH fingerprints."""

    ssh_id: str
    """Deterministic: the connection's id."""
    ts: float
    community_id: str
    vni: int | None
    srcaddr: str
    """The client."""
    srcport: int
    dstaddr: str
    """The server."""
    dstport: int
    client: str | None
    """The client's identification string (SSH-2.0-...)."""
    server: str | None
    hassh: str | None
    """HASSH of the client's KEXINIT."""
    hassh_server: str | None
    kex_alg: str | None
    """Negotiated: the first client algorithm the server also lists."""
    host_key_alg: str | None
    cipher_alg: str | None
    mac_alg: str | None
    compression_alg: str | None
    tags: list[str]
    flow_direction: str | None
    schema_version: int = SSH_RECORD_VERSION


# The types that get a committed JSON Schema under schemas/jsonschema/.
SCHEMA_TYPES: dict[str, type] = {
    "packet_record": PacketRecord,
    "packet_batch": PacketBatch,
    "flow_record": FlowRecord,
    "http_transaction": HttpTransaction,
    "alert": Alert,
    "dns_transaction": DnsTransaction,
    "tls_handshake": TlsHandshake,
    "ssh_session": SshSession,
}
