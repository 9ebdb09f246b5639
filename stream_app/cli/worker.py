"""``mirrorscope worker``: run the stream app (Faust) on the packet topic. Settings come from
--config (YAML, keys = option names), then MIRRORSCOPE_* environment variables, then flags."""

from __future__ import annotations

import logging
import sys

import click

from stream_app.cli.options import load_config, redact, result_topic_options, state_options, state_setup

log = logging.getLogger("mirrorscope.worker")


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
@click.option("--kafka-security", envvar="MIRRORSCOPE_KAFKA_SECURITY", default="PLAINTEXT",
              type=click.Choice(["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"]),
              show_default=True)
@click.option("--kafka-sasl-mechanism", envvar="MIRRORSCOPE_KAFKA_SASL_MECHANISM", default=None)
@click.option("--kafka-sasl-username", envvar="MIRRORSCOPE_KAFKA_SASL_USERNAME", default=None)
@click.option("--kafka-sasl-password", envvar="MIRRORSCOPE_KAFKA_SASL_PASSWORD", default=None)
@click.option("--kafka-ca", envvar="MIRRORSCOPE_KAFKA_CA", default=None)
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
def worker(bootstrap, group, packet_topic, topic_flows, topic_http, topic_alerts, redis_url,
           redis_cluster, redis_password, redis_ca, state_key_file, checkpoint_interval,
           idle_advance, http, keep_credentials, detect, detect_config, web_port, metrics_port,
           web_bind,
           datadir, kafka_security, kafka_sasl_mechanism, kafka_sasl_username,
           kafka_sasl_password, kafka_ca, processes, session_timeout, log_level):
    """Consume the packet topic with the stream core (a Faust app; one consumer group, as
    many workers as the topic has partitions) and publish flow, HTTP and alert records.

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
                     keep_credentials, detect, detect_config, detect_prefix=f"md:{group}")
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
                       topics={"flows": topic_flows, "http": topic_http, "alerts": topic_alerts},
                       datadir=datadir,
                       security_protocol=kafka_security, sasl_mechanism=kafka_sasl_mechanism,
                       sasl_username=kafka_sasl_username, sasl_password=kafka_sasl_password,
                       ssl_cafile=kafka_ca, session_timeout=session_timeout)
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
        "formatters": {"json": {"()": "collectors.logs.JsonFormatter",
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(worker())
