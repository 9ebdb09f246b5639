"""``mirrorscope kinesis-worker``: the stream app on a Kinesis stream (stream_app/
adapters/kinesis.py), for deployments whose collectors publish to Kinesis. Settings come from
MIRRORSCOPE_* environment variables, then flags."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click

from stream_app.cli.options import load_config, result_topic_options
from stream_app.cli.worker import state_options

log = logging.getLogger("mirrorscope.kinesis")

DIRECT_CHECKPOINT_INTERVAL = 60.0
"""Default seconds between checkpoints when results go straight to S3/CloudWatch."""


@click.command("kinesis-worker", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), callback=load_config, is_eager=True,
              expose_value=False, help="YAML settings (keys = these options' names).")
@click.option("--stream", envvar="MIRRORSCOPE_KINESIS_STREAM", required=True,
              help="The collectors' Kinesis stream.")
@click.option("--region", envvar="MIRRORSCOPE_KINESIS_REGION", default=None,
              help="AWS region [default: AWS_REGION].")
@click.option("--endpoint-url", envvar="MIRRORSCOPE_KINESIS_ENDPOINT_URL", default=None,
              help="Kinesis endpoint (tests: moto).")
@click.option("--app-name", envvar="MIRRORSCOPE_KINESIS_APP", default="mirrorscope-kinesis",
              show_default=True,
              help="Names the shard leases and the partition states: the workers of one "
                   "deployment share it.")
@click.option("--worker-id", envvar="MIRRORSCOPE_WORKER_ID", default="",
              help="This worker's id in the leases [default: host:pid:random].")
@click.option("--lease-ms", envvar="MIRRORSCOPE_KINESIS_LEASE_MS", default=10_000,
              show_default=True, type=click.IntRange(min=300),
              help="Shard lease (and heartbeat) lifetime; renewed every third of it. A dead "
                   "worker's shards move after this long.")
@click.option("--shard-refresh", envvar="MIRRORSCOPE_KINESIS_SHARD_REFRESH", default=30.0,
              show_default=True, type=float, help="Seconds between ListShards calls.")
@click.option("--poll-interval", envvar="MIRRORSCOPE_KINESIS_POLL_INTERVAL", default=1.0,
              show_default=True, type=float,
              help="Seconds to wait after an empty GetRecords.")
@state_options
@click.option("--out", "out_dir", envvar="MIRRORSCOPE_KINESIS_OUT", default=None,
              type=click.Path(file_okay=False, path_type=Path),
              help="Write results to DIR/<kind>.jsonl (flows, http, alerts, dns, tls, ssh; "
                   "appended, fsync'ed at each checkpoint).")
@click.option("--kafka-bootstrap", envvar="MIRRORSCOPE_KAFKA_BOOTSTRAP", default=None,
              help="...or publish them to the Kafka result topics (as `mirrorscope worker`).")
@result_topic_options
@click.option("--s3-bucket", envvar="MIRRORSCOPE_S3_BUCKET", default=None,
              help="...or, with no Kafka, write them straight to this bucket as Parquet (the S3 "
                   "sink's layout; MIRRORSCOPE_S3_PREFIX, _KMS_KEY_ID, _ENDPOINT_URL apply).")
@click.option("--cloudwatch-namespace", envvar="MIRRORSCOPE_CLOUDWATCH_NAMESPACE", default=None,
              help="...and/or send the CloudWatch sink's metrics to this namespace.")
@click.option("--cloudwatch-log-group", envvar="MIRRORSCOPE_CLOUDWATCH_LOG_GROUP", default=None,
              help="...and alerts as log events to this group [default with a namespace: "
                   "/mirrorscope/alerts].")
@click.option("--aws-timeout", envvar="MIRRORSCOPE_AWS_TIMEOUT", default=30.0, show_default=True,
              type=float, help="Seconds per S3/CloudWatch call before it counts as failed.")
@click.option("--aws-attempts", envvar="MIRRORSCOPE_AWS_ATTEMPTS", default=5, show_default=True,
              type=click.IntRange(min=1),
              help="Attempts per S3/CloudWatch call (then the shard goes back to its last "
                   "snapshot and makes the records again).")
@click.option("--bind", envvar="MIRRORSCOPE_WEB_BIND", default="0.0.0.0", show_default=True,
              help="Address of the health and metrics endpoints.")
@click.option("--health-port", envvar="MIRRORSCOPE_HEALTH_PORT", default=8081, show_default=True,
              type=int, help="Port of /healthz, /readyz and /metrics (0: any free port).")
@click.option("--metrics-port", envvar="MIRRORSCOPE_METRICS_PORT", default=None, type=int,
              help="Also serve /metrics alone on this port.")
@click.option("--log-level", envvar="MIRRORSCOPE_LOG_LEVEL", default="info",
              type=click.Choice(["debug", "info", "warning", "error"]))
def kinesis_worker(stream, region, endpoint_url, app_name, worker_id, lease_ms, shard_refresh,
                   poll_interval, redis_url, redis_cluster, redis_password, redis_ca,
                   state_key_file, insecure_dev_key, out_dir, kafka_bootstrap, topics,
                   s3_bucket, cloudwatch_namespace, cloudwatch_log_group,
                   aws_timeout, aws_attempts, checkpoint_interval, idle_advance, http,
                   keep_credentials, detect, detect_config, bind, health_port, metrics_port,
                   log_level, protocols=None):
    """Consume the collectors' Kinesis stream with the stream core: shards are leased among
    the workers through Redis (each takes at most its share, a dead worker's shards move to
    the others when their leases expire) and per-flow state is checkpointed in Redis with the
    shard position, so a worker may be killed at any moment and its successor neither loses
    a flow nor counts one twice. Results go to --out DIR, to Kafka (--kafka-bootstrap), or,
    with no Kafka, straight to S3 and/or CloudWatch (--s3-bucket, --cloudwatch-namespace:
    durable at each checkpoint; the checkpoint interval defaults to 60 s then, see
    docs/distributed.md)."""
    params = dict(locals())
    from collectors.logs import setup as setup_logs

    if out_dir is not None and kafka_bootstrap is not None:
        src = click.get_current_context().get_parameter_source("kafka_bootstrap")
        if src != click.core.ParameterSource.ENVIRONMENT:
            raise click.UsageError("give one of --out DIR and --kafka-bootstrap, not both")
        params["kafka_bootstrap"] = None  # --out wins over MIRRORSCOPE_KAFKA_BOOTSTRAP
    direct = out_dir is None and params["kafka_bootstrap"] is None
    if direct and not (s3_bucket or cloudwatch_namespace or cloudwatch_log_group):
        raise click.UsageError(
            "where do the results go? MIRRORSCOPE_S3_BUCKET and/or "
            "MIRRORSCOPE_CLOUDWATCH_NAMESPACE (straight to S3 / CloudWatch), "
            "--kafka-bootstrap (MIRRORSCOPE_KAFKA_BOOTSTRAP), or --out DIR "
            "(MIRRORSCOPE_KINESIS_OUT)")
    ctx = click.get_current_context()
    if direct and ctx.get_parameter_source("checkpoint_interval") == \
            click.core.ParameterSource.DEFAULT:
        # Each checkpoint writes one S3 object per record kind and shard: files of a minute,
        # not of a second (a crash replays at most that much of the shard).
        params["checkpoint_interval"] = DIRECT_CHECKPOINT_INTERVAL
    setup_logs(log_level, component="kinesis-worker")
    for name in ("aiohttp.access", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        rc = asyncio.run(_main(**params))
    except KeyboardInterrupt:  # pragma: no cover
        rc = 130
    sys.exit(rc)


async def _main(stream, region, endpoint_url, app_name, worker_id, lease_ms, shard_refresh,
                poll_interval, redis_url, redis_cluster, redis_password, redis_ca,
                state_key_file, insecure_dev_key, out_dir, kafka_bootstrap, topics,
                s3_bucket, cloudwatch_namespace, cloudwatch_log_group,
                aws_timeout, aws_attempts, checkpoint_interval, idle_advance, http,
                keep_credentials, detect, detect_config, bind, health_port, metrics_port,
                log_level, protocols=None) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from botocore.exceptions import NoRegionError

    from stream_app.core.processor import CoreConfig
    from stream_app.state.codec import Codec
    from stream_app.adapters.kinesis import (
        ConsumerConfig, KinesisConsumer, make_kinesis_client)
    from stream_app.runtime.outputs import FolderResults, KafkaResults
    from stream_app.runtime.health import HealthServer
    from stream_app.runtime.metrics import WorkerMetrics
    from stream_app.runtime.runtime import Runtime, RuntimeConfig
    from stream_app.cli.options import redact
    from stream_app.cli.worker import state_setup

    direct = out_dir is None and kafka_bootstrap is None
    loop = asyncio.get_running_loop()
    # boto3 and Redis calls run in threads: one GetRecords per owned shard may be in flight.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=64, thread_name_prefix="io"))
    try:
        kinesis = make_kinesis_client(region, endpoint_url)
    except NoRegionError:
        raise click.UsageError("no AWS region: --region, or AWS_REGION") from None
    st = state_setup(redis_url, redis_cluster, redis_password, redis_ca, state_key_file, http,
                     keep_credentials, detect, detect_config, detect_prefix=f"md:{app_name}",
                     insecure_dev_key=insecure_dev_key, protocols=protocols)
    runtime = Runtime(st.store, Codec(st.key), CoreConfig(l7=st.l7, detect=None),
                      RuntimeConfig(checkpoint_interval=checkpoint_interval,
                                    idle_advance=idle_advance, contiguous_offsets=False,
                                    # direct outputs: time, not batch counts, cuts the files
                                    **({"checkpoint_batches": 20_000} if direct else {})),
                      detectors=st.detectors)
    if out_dir is not None:
        outputs = FolderResults(out_dir)
    elif kafka_bootstrap is None:
        from stream_app.runtime import aws_outputs
        outputs = aws_outputs.from_env(stream, bucket=s3_bucket, namespace=cloudwatch_namespace,
                                       log_group=cloudwatch_log_group, timeout=aws_timeout,
                                       attempts=aws_attempts, stats=runtime.stats,
                                       region=region)
        try:
            await asyncio.to_thread(outputs.check)
        except Exception as exc:  # no log group, no permission, unreachable
            log.error("CloudWatch Logs not usable for the alert events",
                      extra={**outputs.describe(), "error": repr(exc)})
            return 1
    else:
        try:
            # TLS/SASL as every Kafka client reads them (collectors/kafka_auth.py)
            outputs = KafkaResults(kafka_bootstrap, topics)
        except Exception as exc:  # no broker answers: let the orchestrator restart us
            log.error("Kafka for the result topics unreachable",
                      extra={"bootstrap": kafka_bootstrap, "error": repr(exc)})
            return 1
    cfg = ConsumerConfig(stream=stream, app_name=app_name, worker_id=worker_id,
                         lease_ms=lease_ms, shard_refresh=shard_refresh,
                         poll_interval=poll_interval)
    consumer = KinesisConsumer(cfg, runtime, outputs, st.redis, kinesis)
    metrics = WorkerMetrics(runtime, lambda: st.store.round_trips + consumer.leases.round_trips + (
        st.detect_state.round_trips if st.detect_state is not None else 0), kinesis=consumer)
    health = HealthServer(bind, health_port, metrics_port, consumer.status, metrics.render)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("kinesis worker starting", extra={
        "stream": stream, "app": app_name, "worker": cfg.worker_id, "redis": redact(redis_url),
        "endpoint": endpoint_url, "checkpoint_interval": checkpoint_interval,
        **outputs.describe()})
    await health.start()
    try:
        await consumer.run(stop)
    finally:
        await health.stop()
        try:
            outputs.close()
        except Exception as exc:
            log.warning("closing the outputs failed", extra={"error": repr(exc)})
    log.info("kinesis worker stopped", extra={"stats": consumer.status()["stats"]})
    return 0


if __name__ == "__main__":  # pragma: no cover
    kinesis_worker()
