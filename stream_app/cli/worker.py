"""``mirrorscope worker``: run the stream app (Faust) on the packet topic. Settings come from
--config (YAML, keys = option names), then MIRRORSCOPE_* environment variables, then flags."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import click

from stream_app.cli.options import protocols_option

from stream_app.cli.options import detect_config_from, load_config, redact, result_topic_options
from stream_app.secretopts import not_on_command_line

log = logging.getLogger("mirrorscope.worker")


def state_options(f):
    """The options `worker` and `kinesis-worker` share: where the state lives (Redis, and the
    key that signs it), how often it is checkpointed, and what the core runs."""
    opts = [
        click.option("--redis-url", envvar="MIRRORSCOPE_REDIS_URL",
                     default="redis://127.0.0.1:6379/0", show_default=True,
                     callback=not_on_command_line,
                     help="redis:// or rediss:// (TLS); user:password@ for AUTH (then only "
                          "in the environment or --config: ps shows flags)."),
        click.option("--redis-cluster", envvar="MIRRORSCOPE_REDIS_CLUSTER", is_flag=True,
                     help="Redis Cluster (keys are hash-tagged by partition)."),
        click.option("--redis-password", envvar="MIRRORSCOPE_REDIS_PASSWORD", default=None,
                     callback=not_on_command_line,
                     help="AUTH password (or in the URL); environment or --config only."),
        click.option("--redis-ca", envvar="MIRRORSCOPE_REDIS_CA", default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help="CA bundle for rediss://."),
        click.option("--state-key-file", envvar="MIRRORSCOPE_STATE_KEY_FILE", default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help="File holding the key that signs flow state in Redis "
                          "(or MIRRORSCOPE_STATE_KEY). Every worker of a group needs the "
                          "same key; at most 64 bytes. Required (stream_app/statekey.py)."),
        click.option("--insecure-dev-key", envvar="MIRRORSCOPE_INSECURE_DEV_KEY", is_flag=True,
                     help="Local trials only: with no state key, sign state with the "
                          "published development key instead of refusing to start."),
        click.option("--checkpoint-interval", envvar="MIRRORSCOPE_CHECKPOINT_INTERVAL",
                     default=1.0, show_default=True, type=float,
                     help="Seconds between state snapshots."),
        click.option("--idle-advance", envvar="MIRRORSCOPE_IDLE_ADVANCE", default=30.0,
                     show_default=True, type=float,
                     help="Wall-clock seconds of silence after which a partition's (or "
                          "shard's) idle flows end."),
        click.option("--http/--no-http", "http", default=True, show_default=True,
                     help="Application-layer analysis (HTTP/1.x, TLS, DNS, SSH by content); "
                          "--no-http: flow records only."),
        protocols_option,
        click.option("--keep-credentials", is_flag=True,
                     help="Keep Authorization and cookie values, and credentials in URIs "
                          "(redacted by default)."),
        click.option("--detect/--no-detect", "detect", default=True, show_default=True,
                     help="Run the detectors, with their state shared in Redis."),
        click.option("--detect-config", type=click.Path(exists=True, dir_okay=False),
                     default=None, help="Detector thresholds (JSON/YAML; docs/detectors/)."),
    ]
    for o in reversed(opts):
        f = o(f)
    from stream_app.redact_options import redact_options
    return redact_options(f)


@dataclass
class StateSetup:
    """What `state_options` describe, connected: the Redis settings, client and store, the state key,
    the core's HTTP settings, and the detectors with their state in Redis (or None)."""

    redis_config: object
    redis: object
    store: object
    key: bytes
    l7: object
    detectors: object
    detect_state: object


def state_setup(redis_url, redis_cluster, redis_password, redis_ca, state_key_file, http,
                keep_credentials, detect, detect_config, detect_prefix: str,
                insecure_dev_key: bool = False, protocols=None) -> StateSetup:
    from pathlib import Path

    from stream_app.core.detectors import Detectors
    from stream_app.core.http import HttpConfig
    from stream_app.core.l7 import L7Config
    from stream_app.state.detectors import RedisDetectorState
    from stream_app.state.store import RedisConfig, RedisStore, connect

    from stream_app.statekey import StateKeyError, load_state_key
    try:  # fail closed, before connecting to anything
        key = load_state_key(state_key_file, insecure_dev_key=insecure_dev_key)
    except StateKeyError as exc:
        raise click.ClickException(str(exc)) from None
    rcfg = RedisConfig(url=redis_url, cluster=redis_cluster, password=redis_password,
                       ssl_ca_certs=redis_ca)
    client = connect(rcfg)
    detectors = dstate = None
    if detect:
        dcfg = detect_config_from(Path(detect_config) if detect_config else None)
        dstate = RedisDetectorState(client, prefix=detect_prefix)
        detectors = Detectors(dcfg, state=dstate)
    from stream_app.redact_options import redact_config
    l7 = L7Config(http=HttpConfig(keep_credentials=keep_credentials,
                                  redact=redact_config()),
                  **({"protocols": protocols} if protocols else {})) if http else None
    return StateSetup(rcfg, client, RedisStore(client), key, l7, detectors, dstate)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), callback=load_config, is_eager=True,
              expose_value=False, help="YAML settings (keys = these options' names).")
@click.option("--bootstrap", envvar="MIRRORSCOPE_KAFKA_BOOTSTRAP", default="localhost:9092",
              show_default=True, help="Kafka bootstrap servers.")
@click.option("--group", envvar="MIRRORSCOPE_KAFKA_GROUP", default="mirrorscope-worker",
              show_default=True, help="Consumer group (the Faust app id); also names the state.")
@click.option("--packet-topic", envvar=["MIRRORSCOPE_TOPIC_PACKETS", "MIRRORSCOPE_KAFKA_TOPIC"],
              default="mirrorscope.packets",
              show_default=True, help="The collectors' topic.")
@result_topic_options
@state_options
@click.option("--web-port", envvar="MIRRORSCOPE_HEALTH_PORT", default=8081, show_default=True,
              type=int, help="Port of /healthz, /readyz (and /metrics).")
@click.option("--metrics-port", envvar="MIRRORSCOPE_METRICS_PORT", default=None, type=int,
              help="Also serve Prometheus /metrics on this port (the chart's metrics port).")
@click.option("--web-bind", envvar="MIRRORSCOPE_WEB_BIND", default="0.0.0.0", show_default=True)
@click.option("--datadir", envvar="MIRRORSCOPE_DATA_DIR", default="/tmp/mirrorscope-worker",
              show_default=True, help="Faust's scratch folder.")
@click.option("--kafka-security", default=None,
              type=click.Choice(["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"]),
              help="Kafka security protocol [default: MIRRORSCOPE_KAFKA_SECURITY, else PLAINTEXT].")
@click.option("--kafka-sasl-mechanism", default=None,
              type=click.Choice(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "AWS_MSK_IAM"]),
              help="[default: MIRRORSCOPE_KAFKA_SASL_MECHANISM] AWS_MSK_IAM: MSK's IAM "
                   "authentication (SASL/OAUTHBEARER, tokens from the pod's role). The user and "
                   "password of PLAIN/SCRAM come only from the environment "
                   "(MIRRORSCOPE_KAFKA_SASL_USERNAME, MIRRORSCOPE_KAFKA_SASL_PASSWORD or _FILE).")
# Only there to say where the password goes instead (the user and password come from the
# environment: collectors/kafka_auth.py).
@click.option("--kafka-sasl-password", envvar="MIRRORSCOPE_KAFKA_SASL_PASSWORD", hidden=True,
              expose_value=False, callback=not_on_command_line)
@click.option("--kafka-ca", default=None,
              help="CA bundle that verifies the brokers [default: MIRRORSCOPE_KAFKA_CA, else "
                   "the system's CAs].")
@click.option("--processes", envvar="MIRRORSCOPE_WORKER_PROCESSES", default=1, show_default=True,
              type=click.IntRange(1, 64),
              help="Core processes: above 1, partitions are decoded and analysed in that many "
                   "subprocesses (one worker then uses that many CPUs).")
@click.option("--session-timeout", envvar="MIRRORSCOPE_SESSION_TIMEOUT", default=30.0,
              show_default=True, type=float,
              help="Seconds after which the group gives a silent worker's partitions to the "
                   "others (Kafka's group.min.session.timeout.ms bounds it from below).")
@click.option("--log-level", envvar="MIRRORSCOPE_LOG_LEVEL", default="info",
              type=click.Choice(["debug", "info", "warning", "error"]))
def worker(bootstrap, group, packet_topic, topics, redis_url,
           redis_cluster, redis_password, redis_ca, state_key_file, insecure_dev_key,
           checkpoint_interval,
           idle_advance, http, keep_credentials, detect, detect_config, web_port, metrics_port,
           web_bind,
           datadir, kafka_security, kafka_sasl_mechanism, kafka_ca, processes, session_timeout,
           log_level, protocols=None):
    """Consume the packet topic with the stream core (a Faust app; one consumer group, as
    many workers as the topic has partitions) and publish flow, HTTP, DNS, TLS, SSH and alert
    records.

    Per-flow state lives in Redis, written with each partition's offset, so a worker may be
    killed at any moment and its successor neither loses a flow nor counts one twice."""
    from collectors.logs import setup as setup_logs
    from stream_app.adapters.faust_app import WorkerSettings, build_app
    from stream_app.core.processor import CoreConfig
    from stream_app.runtime.health import HealthServer
    from stream_app.runtime.metrics import WorkerMetrics
    from stream_app.runtime.runtime import Runtime, RuntimeConfig
    from stream_app.state.codec import Codec

    setup_logs(log_level, component="worker")
    for name in ("aiokafka", "faust", "mode"):
        logging.getLogger(name).setLevel(logging.WARNING if log_level != "debug" else logging.DEBUG)
    st = state_setup(redis_url, redis_cluster, redis_password, redis_ca, state_key_file, http,
                     keep_credentials, detect, detect_config, detect_prefix=f"md:{group}",
                     insecure_dev_key=insecure_dev_key, protocols=protocols)
    core = CoreConfig(l7=st.l7, detect=None)
    rt = RuntimeConfig(checkpoint_interval=checkpoint_interval, idle_advance=idle_advance)
    if processes > 1:
        from stream_app.runtime.processes import RemoteRuntime
        runtime = RemoteRuntime(st.store, st.key, core, processes, rt,
                                detect=st.detectors.config if st.detectors else None,
                                redis_cfg=st.redis_config, detect_prefix=f"md:{group}")
    else:
        runtime = Runtime(st.store, Codec(st.key), core, rt, detectors=st.detectors)
    s = WorkerSettings(bootstrap=bootstrap, group=group, packet_topic=packet_topic,
                       topics=topics,
                       datadir=datadir,
                       security=kafka_security_from(kafka_security, kafka_sasl_mechanism, kafka_ca),
                       session_timeout=session_timeout)
    metrics = WorkerMetrics(runtime, lambda: st.store.round_trips + (
        st.detect_state.round_trips if st.detect_state is not None else 0))
    health = HealthServer(web_bind, web_port, metrics_port, dict, metrics.render)
    app = build_app(s, runtime, health)
    health.status = app.mirrorscope.status
    log.info("worker starting", extra={"group": group, "topic": packet_topic,
                                       "redis": redact(redis_url), "web_port": web_port})
    import faust
    # Faust configures logging itself when it starts: give it ours (JSON lines on stderr).
    logging_config = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": "collectors.logs.make_formatter",
                                "static": {"component": "worker"}}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": log_level.upper(), "handlers": ["stderr"]},
        "loggers": {n: {"level": "DEBUG" if log_level == "debug" else "WARNING"}
                    for n in ("aiokafka", "faust", "mode", "kafka")},
    }
    w = faust.Worker(app, loglevel=log_level.upper(), quiet=True, redirect_stdouts=False,
                     logging_config=logging_config)
    try:
        w.execute_from_commandline()
    except SystemExit:
        if app.mirrorscope.fatal is not None:
            sys.exit(75)  # EX_TEMPFAIL: results undelivered; a restart makes them again
        raise


def kafka_security_from(protocol: str | None, mechanism: str | None, cafile: str | None):
    """The environment's Kafka security (collectors/kafka_auth.py), the flags over it."""
    from collectors.kafka_auth import KafkaAuthError, KafkaSecurity
    try:
        return KafkaSecurity.from_env(protocol=protocol, mechanism=mechanism, cafile=cafile)
    except KafkaAuthError as exc:
        raise click.UsageError(str(exc)) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(worker())
