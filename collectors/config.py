"""Configuration of `mirrorscope collect`: one msgspec Struct, read from a YAML file, then
overridden by MIRRORSCOPE_* environment variables, then by command-line flags.

Environment variables name a setting by its path in the file, upper-cased and joined with
``_`` after the ``MIRRORSCOPE_`` prefix: ``listen.port`` is ``MIRRORSCOPE_LISTEN_PORT``,
``kafka.bootstrap`` is ``MIRRORSCOPE_KAFKA_BOOTSTRAP``. A few aliases (``ENV_ALIASES``) keep
the names the Terraform module and the Helm chart already set. Lists and mappings are YAML
flow collections (``MIRRORSCOPE_SOURCE_CIDRS='[10.0.0.0/8, 192.168.0.0/16]'``,
``MIRRORSCOPE_PAYLOAD_PORTS='[80, 8080]'``); other values are strings read as the setting's
type (``MIRRORSCOPE_LISTEN_PORT=4789``, ``MIRRORSCOPE_ENRICHMENT_DISCOVER=true``). Variables
that name no setting (other components read MIRRORSCOPE_* too) are ignored.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from collectors.cloudwatch import CloudWatchConfig

ENV_PREFIX = "MIRRORSCOPE_"

Transport = Literal["kafka", "kinesis", "null", "embedded"]

# The L7 ports whose payload is kept whole by default: HTTP and its usual alternates, and the
# DNS, TLS (443, DNS over TLS 853) and SSH ports the stream app logs. TLS and SSH analysis
# stop after the handshake, but the collector is stateless and still ships their bulk data:
# a deployment that wants less traffic narrows this list (docs/collectors.md).
DEFAULT_PAYLOAD_PORTS = [22, 53, 80, 443, 853, 3000, 5000, 8000, 8008, 8080, 8081, 8888, 9000]


class PortRange(msgspec.Struct, forbid_unknown_fields=True):
    from_port: int
    to_port: int


class FilterRule(msgspec.Struct, forbid_unknown_fields=True):
    """One rule of a traffic mirror filter, in the format the Terraform mirror-filter module
    takes (AWS's TrafficMirrorFilterRule, snake_case)."""

    rule_number: int
    direction: Literal["ingress", "egress"]
    action: Literal["accept", "reject"]
    source_cidr: str = "0.0.0.0/0"
    destination_cidr: str = "0.0.0.0/0"
    protocol: int | None = None
    source_port_range: PortRange | None = None
    destination_port_range: PortRange | None = None
    description: str | None = None


class FilterConfig(msgspec.Struct, forbid_unknown_fields=True):
    rules: list[FilterRule] = []
    """Empty: no local filter (everything the AWS filter mirrored is kept). Otherwise AWS
    semantics: rules by number, first match wins, no match rejects."""


class ListenConfig(msgspec.Struct, forbid_unknown_fields=True):
    address: str = "0.0.0.0"
    port: int = 4789
    rcvbuf_bytes: int = 64 << 20
    """Socket receive buffer per process (set with SO_RCVBUFFORCE when allowed)."""
    recv_batch: int = 128
    """Datagrams per recvmmsg call."""


class PayloadConfig(msgspec.Struct, forbid_unknown_fields=True):
    ports: list[int] = msgspec.field(default_factory=lambda: list(DEFAULT_PAYLOAD_PORTS))
    """Transport payload is kept (up to max_bytes) when either port is listed; elsewhere only
    the headers. An empty list keeps no payload at all."""
    all_ports: bool = False
    """Keep payload on every port (ignores ``ports``)."""
    max_bytes: int = 9001
    """Snap length: the most payload bytes a record keeps."""


class BatchConfig(msgspec.Struct, forbid_unknown_fields=True):
    max_records: int | None = None
    """Records per batch at most (default per transport: BATCH_DEFAULTS)."""
    max_bytes: int | None = None
    """Estimated encoded size at which a partition's batch is sent (default per transport)."""
    linger_ms: float = 50.0
    """Longest a record waits in its partition's batch."""


# Measured (bench/bench_collect.py, docs/collectors.md): small batches keep a batch's records
# in the CPU caches until they are encoded (500 records / 128 KiB cost ~35% less per packet
# than 2000 / 256 KiB without a broker), while each Kafka message has a fixed cost in
# kafka-python and in the broker (2000 / 512 KiB carried ~1.9x the packets of 500 / 128 KiB
# into a real broker). Kinesis user records are aggregated up to 1 MiB anyway.
BATCH_DEFAULTS = {"kafka": (2000, 512 << 10), "kinesis": (500, 128 << 10),
                  "null": (500, 128 << 10), "embedded": (500, 128 << 10)}


class BufferConfig(msgspec.Struct, forbid_unknown_fields=True):
    max_bytes: int = 256 << 20
    """Encoded batches waiting for the destination (Kafka: sent but not acknowledged;
    Kinesis: not yet accepted). Beyond it new batches are dropped, counted and logged."""


class KafkaConfig(msgspec.Struct, forbid_unknown_fields=True):
    bootstrap: str = "localhost:9092"
    topic: str = "mirrorscope.packets"
    acks: Literal["all", "1", "0", -1, 0, 1] = "all"
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "lz4"
    linger_ms: int = 5
    batch_size: int = 1 << 20
    max_request_size: int = 4 << 20
    retries: int = 2147483647
    retry_backoff_ms: int = 100
    request_timeout_ms: int = 30000
    delivery_timeout_ms: int = 300000
    """How long a batch may wait for the broker (retrying) before it counts as lost."""
    reconnect_backoff_max_ms: int = 2000
    """Longest wait between reconnection attempts to a broker that went away (kafka-python's
    default, 30 s, would delay the recovery after an outage)."""
    metadata_timeout_s: float = 10.0
    """How long one attempt to reach the brokers at startup may take (then it is retried)."""
    client_id: str | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: str | None = None
    """PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM (MSK's IAM authentication over
    SASL/OAUTHBEARER, tokens from the instance's role: collectors/kafka_auth.py)."""
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None


class KinesisConfig(msgspec.Struct, forbid_unknown_fields=True):
    stream: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    max_record_bytes: int = 1 << 20
    """One aggregated record (KPL format) at most; the Kinesis limit is 1 MiB."""
    max_request_bytes: int = 5 << 20
    max_request_records: int = 500
    max_retries: int = 20
    retry_backoff_ms: int = 100
    max_backoff_ms: int = 5000
    shard_refresh_s: float = 60.0
    senders: int = 2
    """Threads calling PutRecords."""


class EmbeddedConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Embedded mode: the analysis options of `mirrorscope analyze` and the live output."""

    out_dir: str | None = None
    idle_timeout: float = 15.0
    active_timeout: float = 60.0
    close_linger: float = 5.0
    tick_s: float = 0.5
    """Timeouts are checked this often (live: against the clock), so a flow is written at
    most close_linger + tick_s after its last packet."""
    tcp_idle_timeout: float = 300.0
    http: bool = True
    """HTTP/1.x transactions on any port (payload is then kept on every port)."""
    keep_credentials: bool = False
    detect: bool = True
    detect_config: str | None = None
    """JSON/YAML detector thresholds (docs/detectors/)."""
    flush_s: float = 1.0
    """Records are in the output files at most this long after they end."""
    rotate_mb: float = 64.0
    rotate_s: float = 3600.0
    """Output files are rotated at this size or age (stream_app/sinks/live.py: naming)."""
    status_s: float = 10.0
    """A one-line status is logged this often (0: never)."""
    max_flows: int = 1_000_000
    """Flows the in-process core holds at once (stream_app.core.flowtable.FlowConfig)."""


class EnrichmentConfig(msgspec.Struct, forbid_unknown_fields=True):
    mapping_file: str | None = None
    """YAML or JSON: VNI -> session, ENI, instance, VPC, subnet, account, region."""
    discover: bool = False
    """Look VNIs up through the EC2 API (DescribeTrafficMirrorSessions,
    DescribeNetworkInterfaces), in the background, cached."""
    region: str | None = None
    endpoint_url: str | None = None
    refresh_s: float = 300.0


class HealthConfig(msgspec.Struct, forbid_unknown_fields=True):
    """HTTP health check for the NLB target group (200 while a worker receives, else 503)."""

    address: str | None = None
    """None: the VXLAN listen address (listen.address), so `--listen 127.0.0.1` exposes
    nothing on other interfaces."""
    port: int = 8081
    path: str = "/healthz"
    enabled: bool = True


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Prometheus exposition, served by the parent process for all workers."""

    address: str | None = None
    """None: the VXLAN listen address (listen.address)."""
    port: int = 9108
    path: str = "/metrics"
    enabled: bool = True


class CollectConfig(msgspec.Struct, forbid_unknown_fields=True):
    transport: Transport = "kafka"
    listen: ListenConfig = msgspec.field(default_factory=ListenConfig)
    processes: int = 1
    """Worker processes sharing the port (SO_REUSEPORT); 0 = one per CPU."""
    source_cidrs: list[str] = []
    """Mirror sources whose datagrams are accepted (with the sources EC2 discovery finds, when
    enrichment.discover is on); any other source is refused and counted (source_not_allowed)."""
    accept_any_source: bool = False
    """Accept VXLAN from any source (spoofed UDP to 4789 then injects flows): only for trials."""
    vnis: list[int] = []
    """Accept only these VNIs; empty accepts all."""
    filter: FilterConfig = msgspec.field(default_factory=FilterConfig)
    payload: PayloadConfig = msgspec.field(default_factory=PayloadConfig)
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    buffer: BufferConfig = msgspec.field(default_factory=BufferConfig)
    kafka: KafkaConfig = msgspec.field(default_factory=KafkaConfig)
    kinesis: KinesisConfig = msgspec.field(default_factory=KinesisConfig)
    embedded: EmbeddedConfig = msgspec.field(default_factory=EmbeddedConfig)
    null_partitions: int = 16
    """Partitions the null transport pretends to have (benchmarks)."""
    enrichment: EnrichmentConfig = msgspec.field(default_factory=EnrichmentConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    cloudwatch: CloudWatchConfig = msgspec.field(default_factory=CloudWatchConfig)
    """The collector's metrics in CloudWatch (PutMetricData), for the alarms on EC2."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    stats_interval_s: float = 1.0
    """How often workers report their counters to the parent (metrics, health)."""
    shutdown_timeout_s: float = 15.0
    """On SIGTERM: how long to drain, flush and wait for the destination's acknowledgements."""
    collector_id: str | None = None
    """Names this collector in batches (default host:pid of each worker)."""


# Environment names that differ from the path rule, kept for the deployment code.
ENV_ALIASES: dict[str, str] = {
    "MIRRORSCOPE_KAFKA_SECURITY": "kafka.security_protocol",
    # the names the worker and the sinks read too (one Secret serves every component)
    "MIRRORSCOPE_KAFKA_SASL_USERNAME": "kafka.sasl_plain_username",
    "MIRRORSCOPE_KAFKA_SASL_PASSWORD": "kafka.sasl_plain_password",
    "MIRRORSCOPE_KAFKA_CA": "kafka.ssl_cafile",
    "MIRRORSCOPE_COLLECT_PROCESSES": "processes",
    "MIRRORSCOPE_TOPIC_PACKETS": "kafka.topic",
}


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the setting."""


def _struct_paths(t: type, prefix: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """ENV_NAME -> path for every leaf setting of the config struct."""
    out: dict[str, tuple[str, ...]] = {}
    for f in msgspec.structs.fields(t):
        path = prefix + (f.name,)
        sub = f.type
        if isinstance(sub, type) and issubclass(sub, msgspec.Struct) and sub is not FilterRule:
            out.update(_struct_paths(sub, path))
        else:
            out[ENV_PREFIX + "_".join(path).upper()] = path
    return out


ENV_PATHS = _struct_paths(CollectConfig)


def _set_path(d: dict, path: tuple[str, ...], value: Any) -> None:
    for p in path[:-1]:
        nxt = d.get(p)
        if not isinstance(nxt, dict):
            nxt = d[p] = {}
        d = nxt
    d[path[-1]] = value


def _parse_env_value(raw: str) -> Any:
    """Lists and mappings are YAML flow collections; everything else stays a string, which
    the conversion then reads as the setting's type (so "null" stays the transport's name,
    "6000" becomes a port)."""
    v = raw.strip()
    if v and v[0] in "[{":
        try:
            return yaml.safe_load(v)
        except yaml.YAMLError:
            return raw
    return raw


def env_overrides(environ: Mapping[str, str]) -> dict:
    """The settings the environment gives, as a nested dict (aliases first, so the exact
    path name wins over an alias)."""
    out: dict = {}
    for name, path in ENV_ALIASES.items():
        if environ.get(name, "").strip():  # empty = not set (charts render unset values so)
            _set_path(out, tuple(path.split(".")), _parse_env_value(environ[name]))
    for name, path in ENV_PATHS.items():
        if environ.get(name, "").strip():
            _set_path(out, path, _parse_env_value(environ[name]))
    return out


def _merge(base: dict, over: Mapping) -> dict:
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None,
                overrides: Mapping | None = None) -> CollectConfig:
    """File < environment < overrides (the command line's flags, as a nested dict)."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text())
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of settings")
        data = loaded
    _merge(data, env_overrides(os.environ if environ is None else environ))
    if overrides:
        _merge(data, overrides)
    try:
        cfg = msgspec.convert(data, CollectConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting: {exc}") from exc
    resolve_defaults(cfg)
    validate(cfg)
    return cfg


def resolve_defaults(cfg: CollectConfig) -> CollectConfig:
    """Fill the settings whose default depends on others (batch sizes on the transport)."""
    recs, size = BATCH_DEFAULTS[cfg.transport]
    if cfg.batch.max_records is None:
        cfg.batch.max_records = recs
    if cfg.batch.max_bytes is None:
        cfg.batch.max_bytes = size
    return cfg


def validate(cfg: CollectConfig) -> None:
    """Checks msgspec's types cannot express; raises ConfigError naming the setting."""
    def bad(setting: str, why: str):
        raise ConfigError(f"{setting}: {why}")

    if cfg.cloudwatch.enabled and cfg.cloudwatch.interval_s < 1:
        bad("cloudwatch.interval_s", "must be >= 1 second")
    if not 0 <= cfg.listen.port <= 65535:
        bad("listen.port", "must be 0-65535")
    if cfg.processes < 0:
        bad("processes", "must be >= 0 (0 = one per CPU)")
    for c in cfg.source_cidrs:
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError:
            bad("source_cidrs", f"{c!r} is not an IPv4 or IPv6 CIDR")
    for v in cfg.vnis:
        if not 0 <= v < 1 << 24:
            bad("vnis", f"{v} is not a 24-bit VNI")
    for p in cfg.payload.ports:
        if not 0 <= p <= 65535:
            bad("payload.ports", f"{p} is not a port")
    if cfg.payload.max_bytes < 0:
        bad("payload.max_bytes", "must be >= 0")
    if cfg.batch.max_records < 1:
        bad("batch.max_records", "must be >= 1")
    if cfg.batch.max_bytes < 1024:
        bad("batch.max_bytes", "must be >= 1024")
    if cfg.batch.linger_ms < 0:
        bad("batch.linger_ms", "must be >= 0")
    if cfg.buffer.max_bytes < cfg.batch.max_bytes:
        bad("buffer.max_bytes", "must be at least batch.max_bytes")
    if cfg.transport == "kinesis":
        if not cfg.kinesis.stream:
            bad("kinesis.stream", "is required with transport kinesis")
        if not 1024 <= cfg.kinesis.max_record_bytes <= 1 << 20:
            bad("kinesis.max_record_bytes", "must be 1 KiB - 1 MiB (the Kinesis record limit)")
        if cfg.batch.max_bytes > cfg.kinesis.max_record_bytes - 4096:
            bad("batch.max_bytes", "must leave room in kinesis.max_record_bytes for the "
                "aggregation overhead (4 KiB)")
        if not cfg.kinesis.max_record_bytes <= cfg.kinesis.max_request_bytes <= 5 << 20:
            bad("kinesis.max_request_bytes", "must be max_record_bytes - 5 MiB")
        if not 1 <= cfg.kinesis.max_request_records <= 500:
            bad("kinesis.max_request_records", "must be 1-500")
    if cfg.transport == "kafka" and cfg.batch.max_bytes > cfg.kafka.max_request_size - 4096:
        bad("batch.max_bytes", "must be below kafka.max_request_size")
    if cfg.transport == "embedded" and not cfg.embedded.out_dir:
        bad("embedded.out_dir", "is required in embedded mode (--out DIR)")
    e = cfg.embedded
    for name in ("idle_timeout", "tcp_idle_timeout", "active_timeout", "close_linger",
                 "tick_s", "flush_s", "rotate_mb", "rotate_s"):
        if getattr(e, name) <= 0:
            bad(f"embedded.{name}", "must be positive")
    if e.status_s < 0:
        bad("embedded.status_s", "must be >= 0 (0: no status line)")
    if cfg.null_partitions < 1:
        bad("null_partitions", "must be >= 1")
    seen = set()
    for r in cfg.filter.rules:
        if not 1 <= r.rule_number <= 32766:
            bad("filter.rules", f"rule_number {r.rule_number} is not 1-32766")
        if (r.direction, r.rule_number) in seen:
            bad("filter.rules", f"rule_number {r.rule_number} appears twice for {r.direction}")
        seen.add((r.direction, r.rule_number))
        if r.protocol is not None and not 0 <= r.protocol <= 255:
            bad("filter.rules", f"rule {r.rule_number}: protocol {r.protocol} is not 0-255")
        for c in (r.source_cidr, r.destination_cidr):
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                bad("filter.rules", f"rule {r.rule_number}: {c!r} is not a CIDR")
        for pr in (r.source_port_range, r.destination_port_range):
            if pr is not None:
                if not 0 <= pr.from_port <= pr.to_port <= 65535:
                    bad("filter.rules", f"rule {r.rule_number}: port range {pr.from_port}-"
                        f"{pr.to_port} is not 0 <= from <= to <= 65535")
                if r.protocol not in (6, 17):
                    bad("filter.rules", f"rule {r.rule_number}: port ranges need protocol 6 or 17")


def effective_processes(cfg: CollectConfig) -> int:
    return cfg.processes or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else os.cpu_count() or 1)


def to_dict(cfg: CollectConfig) -> dict:
    """The settings as plain data, secrets masked (for the startup log)."""
    d = msgspec.to_builtins(cfg)
    for k in ("sasl_plain_password", "ssl_password"):
        if d["kafka"].get(k):
            d["kafka"][k] = "***"
    return d
