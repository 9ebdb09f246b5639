"""`mirrorscope sink s3` and `mirrorscope sink cloudwatch`: consume the result topics
(mirrorscope.flows / .http / .alerts; one msgpack-encoded record per message, key = its id)
and deliver them. Registered on the `mirrorscope` group by stream_app/cli/__init__.py.

Offsets are committed by hand, only once what they cover is durable: for S3, in S3 or the
local spool; for CloudWatch, after PutMetricData/PutLogEvents succeeded. A crash replays from
the last commit; the S3 object names make that replay overwrite, not duplicate.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

import click
import msgspec

from stream_app.cli.options import load_config, result_topic_options
from stream_app.sinks.batching import Bounds, RecordKind, default_kinds

log = logging.getLogger("mirrorscope.sink")


class Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes


class Source(Protocol):
    """What the loops need from a consumer (KafkaSource; tests use an in-memory one)."""

    def poll(self, timeout_s: float) -> list[Message]: ...
    def commit(self, offsets: dict[tuple[str, int], int]) -> None: ...
    def close(self) -> None: ...


class KafkaSource:
    """kafka-python consumer with auto-commit off; revoked partitions are reported to
    ``on_revoke`` so their open files are dropped (the new owner replays them)."""

    def __init__(self, topics: list[str], group: str, bootstrap: str,
                 on_revoke: Callable[[str, int], None] | None = None, **extra):
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=group,
                                      enable_auto_commit=False, auto_offset_reset="earliest",
                                      client_id=f"{group}-{os.getpid()}", **extra)
        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                for tp in revoked:
                    if on_revoke is not None:
                        on_revoke(tp.topic, tp.partition)

            def on_partitions_assigned(self, assigned):
                pass

        self.consumer.subscribe(topics=topics, listener=Listener())
        self._committed: dict[tuple[str, int], int] = {}

    def poll(self, timeout_s: float) -> list[Message]:
        got = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=5000)
        out = []
        for tp, recs in got.items():
            out.extend(Message(tp.topic, tp.partition, r.offset, r.value) for r in recs)
        return out

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata
        todo = {k: v for k, v in offsets.items() if self._committed.get(k) != v}
        if not todo:
            return
        self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                              for (t, p), o in todo.items()})
        self._committed.update(todo)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def kafka_extra_from_env(environ=None) -> dict:
    """The sinks' Kafka client security (MSK IAM, SCRAM, TLS), as every component reads it."""
    from collectors.kafka_auth import KafkaSecurity
    return KafkaSecurity.from_env(environ).kafka_python()


class Decoders:
    """topic -> (kind, msgpack decoder); undecodable messages are counted and skipped."""

    def __init__(self, topic_kinds: dict[str, RecordKind]):
        self.kinds = topic_kinds
        self.dec = {t: msgspec.msgpack.Decoder(k.struct_type) for t, k in topic_kinds.items()}
        self.bad = 0

    def decode(self, m: Message):
        try:
            return self.dec[m.topic].decode(m.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.bad += 1
            log.error("skipped undecodable message %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc)
            return None


def run_s3(source: Source, sink, topic_kinds: dict[str, RecordKind], stop: threading.Event,
           poll_s: float = 0.5, idle_exit_s: float | None = None) -> dict:
    """Consume until ``stop`` (or ``idle_exit_s`` without a message), then flush, send and
    commit. Returns the sink's counters."""
    decoders = Decoders(topic_kinds)
    last_msg = time.monotonic()
    sink.on_durable = lambda topic, partition, offset: source.commit({(topic, partition): offset})
    try:
        while not stop.is_set():
            msgs = source.poll(poll_s)
            for m in msgs:
                rec = decoders.decode(m)
                if rec is not None:
                    sink.add(topic_kinds[m.topic], m.topic, m.partition, m.offset, rec)
            if msgs:  # idle = no message since the last batch was handled, not since it came
                last_msg = time.monotonic()
            sink.poll()
            source.commit(sink.committable())
            if idle_exit_s is not None and time.monotonic() - last_msg >= idle_exit_s:
                break
        sink.flush()
        source.commit(sink.committable())
        sink.close(timeout=30.0)
    finally:
        source.close()
    return {**sink.stats(), "undecodable": decoders.bad}


def run_cloudwatch(source: Source, sink, topic_kinds: dict[str, RecordKind],
                   stop: threading.Event, poll_s: float = 0.5,
                   idle_exit_s: float | None = None) -> dict:
    decoders = Decoders(topic_kinds)
    consumed: dict[tuple[str, int], int] = {}
    last_msg = time.monotonic()

    def flush_and_commit():
        try:
            sink.flush()
        except Exception as exc:
            log.warning("CloudWatch flush failed (kept for the next one): %s", exc)
            return
        source.commit(dict(consumed))

    try:
        while not stop.is_set():
            msgs = source.poll(poll_s)
            by_kind: dict[str, list] = {}
            for m in msgs:
                rec = decoders.decode(m)
                if rec is not None:
                    by_kind.setdefault(topic_kinds[m.topic].name, []).append(rec)
                consumed[(m.topic, m.partition)] = m.offset + 1
            for kind, recs in by_kind.items():
                sink.add(kind, recs)
            if sink.due():
                flush_and_commit()
            if msgs:  # idle = no message since the last batch was handled, not since it came
                last_msg = time.monotonic()
            if idle_exit_s is not None and time.monotonic() - last_msg >= idle_exit_s:
                break
        flush_and_commit()
    finally:
        source.close()
    return {"sent_datums": sink.sent_datums, "sent_events": sink.sent_events,
            "undecodable": decoders.bad}


# --- command line ---------------------------------------------------------------------------

def _common(f):
    opts = [
        click.option("--config", type=click.Path(dir_okay=False), callback=load_config,
                     is_eager=True, expose_value=False,
                     help="YAML settings (keys = these options' names)."),
        click.option("--bootstrap", envvar="MIRRORSCOPE_KAFKA_BOOTSTRAP", default="localhost:9092",
                     show_default=True, help="Kafka bootstrap servers."),
        click.option("--group", envvar="MIRRORSCOPE_KAFKA_GROUP", default=None,
                     help="Consumer group [default: mirrorscope-sink-<name>]."),
        click.option("--health-port", envvar="MIRRORSCOPE_HEALTH_PORT", type=int, default=None,
                     help="Serve GET /healthz on this port."),
        click.option("--metrics-port", envvar="MIRRORSCOPE_METRICS_PORT", type=int, default=None,
                     help="Serve Prometheus /metrics (the sink's counters) on this port."),
        click.option("--idle-exit", type=float, default=None,
                     help="Exit after this many seconds without a message (batch runs, tests)."),
        click.option("--log-level", default="info",
                     type=click.Choice(["debug", "info", "warning", "error"])),
    ]
    f = result_topic_options(f)
    for o in reversed(opts):
        f = o(f)
    return f


def _topic_kinds(topics: dict[str, str]) -> dict[str, RecordKind]:
    """topic -> kind, for every result kind (``topics``: kind name -> topic)."""
    kinds = default_kinds()
    return {topics[name]: kind for name, kind in kinds.items()}


def _serve_health(port: int | None, healthy: Callable[[], bool]) -> None:
    if not port:
        return
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path.startswith("/healthz") and healthy()
            self.send_response(200 if ok else 503)
            self.end_headers()
            self.wfile.write(b"ok\n" if ok else b"unhealthy\n")

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("0.0.0.0", port), H)
    threading.Thread(target=srv.serve_forever, daemon=True, name="healthz").start()


def _serve_metrics(port: int | None, name: str, stats: Callable[[], dict]) -> None:
    """Prometheus /metrics: the sink's counters as ``mirrorscope_sink_<counter>{sink=...}``."""
    if not port:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import GaugeMetricFamily

    class SinkCollector:
        def collect(self):
            for k, v in sorted(stats().items()):
                g = GaugeMetricFamily(f"mirrorscope_sink_{k}", f"mirrorscope sink {k}", labels=["sink"])
                g.add_metric([name], float(v))
                yield g

    reg = CollectorRegistry()
    reg.register(SinkCollector())
    start_http_server(port, registry=reg)


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@click.group("sink")
def sink() -> None:
    """Deliver the stream app's results (the result topics) to AWS."""


@sink.command("s3")
@_common
@click.option("--bucket", envvar="MIRRORSCOPE_S3_BUCKET", required=True, help="Target bucket.")
@click.option("--prefix", envvar="MIRRORSCOPE_S3_PREFIX", default="", help="Key prefix.")
@click.option("--kms-key-id", envvar="MIRRORSCOPE_S3_KMS_KEY_ID", default=None,
              help="SSE-KMS key (id, ARN or alias); without it SSE-S3 (AES256).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl.gz"]), default="parquet",
              show_default=True)
@click.option("--max-file-records", type=int, default=Bounds.max_records, show_default=True)
@click.option("--max-file-mb", type=float, default=Bounds.max_bytes / (1 << 20), show_default=True,
              help="Bound on the records' JSON size per file (Parquet files are smaller).")
@click.option("--max-file-seconds", type=float, default=Bounds.max_age_s, show_default=True,
              help="Longest a file stays open (wall clock).")
@click.option("--late-seconds", type=float, default=Bounds.late_s, show_default=True,
              help="A record this much older than the open file's hour still joins that file.")
@click.option("--data-dir", envvar="MIRRORSCOPE_DATA_DIR", default=None,
              type=click.Path(file_okay=False, path_type=Path),
              help="The spool lives in DATA_DIR/spool [default: /var/lib/mirrorscope when "
                   "writable, else ~/.local/state/mirrorscope].")
@click.option("--spool-max-mb", type=float, default=1024, show_default=True)
@click.option("--endpoint-url", envvar="MIRRORSCOPE_S3_ENDPOINT_URL", default=None,
              help="S3 endpoint (tests: moto).")
def sink_s3(bootstrap, group, topics, health_port, metrics_port, idle_exit,
            log_level, bucket, prefix, kms_key_id, fmt, max_file_records, max_file_mb,
            max_file_seconds, late_seconds, data_dir, spool_max_mb, endpoint_url) -> None:
    """Write flow, HTTP, DNS, TLS, SSH and alert records to S3 as Parquet, partitioned
    <prefix><type>/dt=YYYY-MM-DD/hour=HH/, for the Athena tables in schemas/athena/."""
    from stream_app.sinks.s3 import S3Settings, S3Sink

    from collectors.logs import setup as setup_logs
    setup_logs(log_level, component="sink")
    settings = S3Settings.from_env(
        bucket=bucket, prefix=prefix, fmt=fmt, kms_key_id=kms_key_id, data_dir=data_dir,
        spool_max_bytes=int(spool_max_mb * (1 << 20)), endpoint_url=endpoint_url,
        bounds=Bounds(max_records=max_file_records, max_bytes=int(max_file_mb * (1 << 20)),
                      max_age_s=max_file_seconds, late_s=late_seconds))
    s3 = S3Sink(settings)
    kinds = _topic_kinds(topics)
    src = KafkaSource(list(kinds), group or "mirrorscope-sink-s3", bootstrap,
                      on_revoke=s3.revoke, **kafka_extra_from_env())
    _serve_health(health_port, lambda: True)
    _serve_metrics(metrics_port, "s3", s3.stats)
    stats = run_s3(src, s3, kinds, _stop_event(), idle_exit_s=idle_exit)
    sys.stdout.write(json.dumps(stats) + "\n")


@sink.command("cloudwatch")
@_common
@click.option("--namespace", envvar="MIRRORSCOPE_CLOUDWATCH_NAMESPACE", default="MirrorScope",
              show_default=True)
@click.option("--log-group", envvar="MIRRORSCOPE_CLOUDWATCH_LOG_GROUP", default="/mirrorscope/alerts",
              show_default=True, help="Log group of the alert events (created by Terraform).")
@click.option("--log-stream", default=None, help="[default: <hostname>-<pid>]")
@click.option("--flush-seconds", type=float, default=60.0, show_default=True,
              help="Seconds between PutMetricData/PutLogEvents rounds.")
@click.option("--endpoint-url", envvar="MIRRORSCOPE_CLOUDWATCH_ENDPOINT_URL", default=None)
def sink_cloudwatch(bootstrap, group, topics, health_port,
                    metrics_port, idle_exit, log_level, namespace, log_group, log_stream, flush_seconds,
                    endpoint_url) -> None:
    """Publish metrics (flows, packets, bytes, HTTP by status class, alerts by severity and
    type) and alert log events to CloudWatch."""
    from stream_app.sinks.cloudwatch import CloudWatchSettings, CloudWatchSink

    from collectors.logs import setup as setup_logs
    setup_logs(log_level, component="sink")
    settings = CloudWatchSettings.from_env(namespace=namespace, log_group=log_group,
                                           log_stream=log_stream, flush_interval_s=flush_seconds,
                                           endpoint_url=endpoint_url)
    cw = CloudWatchSink(settings)
    kinds = _topic_kinds(topics)
    src = KafkaSource(list(kinds), group or "mirrorscope-sink-cloudwatch", bootstrap,
                      **kafka_extra_from_env())
    _serve_health(health_port, lambda: True)
    _serve_metrics(metrics_port, "cloudwatch",
                   lambda: {"sent_datums": cw.sent_datums, "sent_events": cw.sent_events})
    stats = run_cloudwatch(src, cw, kinds, _stop_event(), idle_exit_s=idle_exit)
    sys.stdout.write(json.dumps(stats) + "\n")
