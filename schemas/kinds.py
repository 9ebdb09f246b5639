"""The result kinds: one entry per record type the stream core makes, read by every place that
lists them (embedded files, the worker's result topics and their CLI options, the sinks, the
Athena DDL and views, query, tail, the live view, the report). A new kind is one entry here
and its list in processor.Results, plus what cannot import Python, each held to this list by
a test: its Glue table and prefix in terraform/modules/storage (tables.tf, variables.tf;
tests/test_athena_ddl.py), its topic in the Helm chart (values.yaml, values.schema.json,
templates/configmap.yaml; tests/deploy/test_deploy_helm.py); then
`python -m schemas.generate` and `python -m schemas.athena.generate`.

Only the standard library and schemas.records at module level: the CLI imports this to build
its options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from schemas.records import Alert, DnsTransaction, FlowRecord, HttpTransaction, SshSession, TlsHandshake


@dataclass(frozen=True)
class Kind:
    name: str
    """The Results attribute, the embedded file stem (<name>.jsonl), the S3 key prefix and
    Athena/Glue table, the tail alias and the suffix of --topic-<name>."""
    struct_type: type
    id_field: str
    """Deterministic id: Kafka key, de-duplication key of the *_unique view and of readers."""
    time_field: str
    """Unix seconds that place the record (S3 dt=/hour=, query's time filter)."""
    schema: str
    """schemas/jsonschema/<schema>.json."""
    description: str
    """Glue table comment and --topic-<name> help."""

    @property
    def table(self) -> str:
        return self.name

    @property
    def topic(self) -> str:
        """Default result topic."""
        return f"mirrorscope.{self.name}"

    @property
    def env(self) -> str:
        """Environment variable of the result topic."""
        return f"MIRRORSCOPE_TOPIC_{self.name.upper()}"

    def id_of(self, rec) -> str:
        return getattr(rec, self.id_field)

    def ts_of(self, rec) -> float:
        return getattr(rec, self.time_field)


KINDS: tuple[Kind, ...] = (
    # `end`: flows are emitted in the order they end, which keeps each S3 partition's files
    # contiguous in time; a flow spans at most the active timeout (60 s by default).
    Kind("flows", FlowRecord, "flow_id", "end", "flow_record",
         "MirrorScope flow records (VPC Flow Logs v5 fields + vni, community_id, Zeek conn fields)"),
    Kind("http", HttpTransaction, "http_id", "ts", "http_transaction",
         "MirrorScope HTTP/1.x transactions"),
    Kind("alerts", Alert, "alert_id", "ts", "alert", "MirrorScope alerts"),
    Kind("dns", DnsTransaction, "dns_id", "ts", "dns_transaction",
         "MirrorScope DNS transactions (UDP and TCP)"),
    Kind("tls", TlsHandshake, "tls_id", "ts", "tls_handshake",
         "MirrorScope TLS handshakes (JA4/JA4S, certificate chain)"),
    Kind("ssh", SshSession, "ssh_id", "ts", "ssh_session",
         "MirrorScope SSH sessions (banners, HASSH)"),
)

NAMES: tuple[str, ...] = tuple(k.name for k in KINDS)
BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
# (name, id getter) per kind, for the per-record hot paths (attrgetter: a C call, as fast as
# writing r.flow_id; getattr(r, "flow_id") costs more per record).
ID_GETTERS: tuple[tuple[str, Callable[[Any], str]], ...] = tuple(
    (k.name, attrgetter(k.id_field)) for k in KINDS)


def records_of(res) -> list[tuple[Kind, list]]:
    """(kind, records) of a processor.Results (or anything with one list attribute per kind)."""
    return [(k, getattr(res, k.name, None) or []) for k in KINDS]
