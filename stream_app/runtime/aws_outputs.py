"""Durable direct outputs for the Kinesis worker: results straight to S3 (Parquet, the S3
sink's layout and tables) and CloudWatch (the CloudWatch sink's metrics and alert log events),
with no Kafka anywhere. The ``Outputs`` contract (stream_app/runtime/outputs.py) ties them to
the checkpoint: ``flush(partition)`` returns only once the partition's objects are PUT and
its CloudWatch calls succeeded; otherwise it raises OutputError and the Runtime does not write
the snapshot, so the shard goes back to its last snapshot and makes the records again.

Nothing is spooled locally: a pod's emptyDir dies with the pod, so only S3 itself counts as
durable. Guarantees are those of the Kafka path: at-least-once, and a record made again after
a replay has the same id and content (the Athena views ``<table>_unique`` keep one row per id).

Files. Each partition (a Kinesis shard) has its own Batcher (stream_app/sinks/batching.py):
a file is cut at each flush (a checkpoint), and earlier when it reaches the sink's bounds
(records, bytes, the hour of its records); a file cut early is uploaded at once, in the
background, and the flush waits for it too. Object names use the sink's ``object_key``:

    <prefix><kind>/dt=YYYY-MM-DD/hour=HH/<stream>-<shard number>-<first record's time in µs>-<hash of its id>.parquet

They depend only on the partition and the file's first record, never on where a flush cut:
after a crash the replay starts at the last snapshot, whose first record is the first record
of the file that was being written, so that file is overwritten; files cut elsewhere on the
replay are duplicates with the same ids. The encoding and the encryption arguments are the
sink's (parquet.encode, s3.sse_args).

CloudWatch. Metrics are summed per partition (the sink's MetricAggregator) and sent with the
alert events at the partition's flush, only after its S3 uploads succeeded (so an S3 outage
does not resend the same sums at every retry). A replay sends its sums again: CloudWatch
metrics are at-least-once here, as with the CloudWatch sink.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from schemas.kinds import records_of
from stream_app.core.processor import Results
from stream_app.runtime.outputs import Outputs, OutputError
from stream_app.sinks.batching import Batcher, Bounds, Chunk, RecordKind, default_kinds, object_key
from stream_app.sinks.cloudwatch import (
    CloudWatchSettings, MetricAggregator, alert_event, log_event_batches, metric_batches)
from stream_app.sinks.parquet import encode
from stream_app.sinks.s3 import CONTENT_TYPES, S3Settings, make_s3_client, sse_args

log = logging.getLogger("mirrorscope.outputs")

_DIGITS = re.compile(r"(\d+)$")


def partition_number(tp) -> int:
    """A shard's number: ``shardId-000000000007`` -> 7 (a Kafka-style int partition as is)."""
    p = getattr(tp, "partition", tp)
    if isinstance(p, int):
        return p
    m = _DIGITS.search(str(p))
    if m is None:
        raise ValueError(f"no shard number in {p!r}")
    return int(m.group(1))


@dataclass
class _Part:
    """What is pending for one partition since its last flush."""

    batcher: Batcher
    number: int
    metrics: MetricAggregator
    events: list = field(default_factory=list)
    uploads: list = field(default_factory=list)
    """Background uploads of files cut before the flush (asyncio tasks)."""
    records: int = 0


class AwsOutputs(Outputs):
    def __init__(self, source: str, s3: S3Settings | None = None,
                 cloudwatch: CloudWatchSettings | None = None, s3_client=None,
                 cw_client=None, logs_client=None, kinds: dict[str, RecordKind] | None = None,
                 clock=time.time, stats: Counter | None = None):
        if s3 is None and cloudwatch is None:
            raise ValueError("no destination: an S3 bucket and/or a CloudWatch namespace")
        if s3 is not None and not s3.bucket:
            raise ValueError("no bucket (MIRRORSCOPE_S3_BUCKET)")
        self.source = source
        self.s3 = s3
        self.cw_settings = cloudwatch
        self.kinds = kinds or default_kinds()
        self.clock = clock
        self.s3_client = s3_client
        if s3 is not None and s3_client is None:
            self.s3_client = make_s3_client(s3)
        self.cw = cw_client
        self.logs = logs_client
        if cloudwatch is not None and (cw_client is None or logs_client is None):
            import boto3
            from botocore.config import Config
            cfg = Config(connect_timeout=cloudwatch.connect_timeout,
                         read_timeout=cloudwatch.read_timeout,
                         retries={"mode": "standard", "total_max_attempts": cloudwatch.max_attempts})
            kw = dict(endpoint_url=cloudwatch.endpoint_url, region_name=cloudwatch.region, config=cfg)
            self.cw = cw_client or boto3.client("cloudwatch", **kw)
            self.logs = logs_client or boto3.client("logs", **kw)
        self.log_stream = None
        if cloudwatch is not None and cloudwatch.log_group:
            import os
            import socket
            self.log_stream = cloudwatch.log_stream or f"{socket.gethostname()}-{os.getpid()}"
        self._stream_ready = False
        self._alert_types: set[str] = set()  # one bounded set of Type dimensions per process
        self._parts: dict[object, _Part] = {}
        self.stats: Counter = Counter() if stats is None else stats
        """Counted as ``output_*`` (the runtime's Counter in kinesis-worker: exported as
        mirrorscope_worker_output_*_total)."""

    # -- setup ----------------------------------------------------------------------------------
    def check(self) -> None:
        """At startup: the alert log stream exists (CreateLogStream in the Terraform-made
        group). Raises with the service's error when the group is missing or unreachable."""
        if self.log_stream is not None:
            self._ensure_stream()

    def _ensure_stream(self) -> None:
        if self._stream_ready:
            return
        try:
            self.logs.create_log_stream(logGroupName=self.cw_settings.log_group,
                                        logStreamName=self.log_stream)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass
        self._stream_ready = True

    # -- records in -----------------------------------------------------------------------------
    def _part(self, partition) -> _Part:
        st = self._parts.get(partition)
        if st is None:
            bounds = self.s3.bounds if self.s3 is not None else Bounds()
            agg = MetricAggregator()
            agg._alert_types = self._alert_types  # our own class: share the bounded set
            st = self._parts[partition] = _Part(Batcher(bounds), partition_number(partition), agg)
        return st

    async def publish(self, partition, res: Results) -> None:
        if not res:
            return
        st = self._part(partition)
        if self.s3 is not None:
            now = self.clock()
            for name, kind in self.kinds.items():
                for rec in getattr(res, name, None) or ():
                    # The offset only numbers the records in the Batcher; names do not use it.
                    done = st.batcher.add(kind, self.source, st.number, st.records, rec, now)
                    st.records += 1
                    for ch in done:  # a file full before the checkpoint: upload it now
                        st.uploads.append(self._upload(ch))
        if self.cw_settings is not None:
            for kind, recs in records_of(res):
                if recs:
                    st.metrics.add(kind.name, recs)
            if self.log_stream is not None and res.alerts:
                now_ms = int(self.clock() * 1000)
                st.events.extend(alert_event(a, now_ms) for a in res.alerts)

    def _upload(self, ch: Chunk) -> asyncio.Task:
        t = asyncio.ensure_future(self._upload_one(ch))
        t.add_done_callback(_retrieve)  # a forgotten partition's upload may fail unheard
        return t

    async def _upload_one(self, ch: Chunk) -> str:
        # Counted here, in the event loop: the Counter is shared with the runtime's.
        try:
            key = await asyncio.to_thread(self._put, ch)
        except Exception:
            self.stats["output_put_failures"] += 1
            raise
        self.stats["output_files"] += 1
        self.stats["output_records"] += len(ch.records)
        return key

    # -- out ------------------------------------------------------------------------------------
    def key(self, ch: Chunk) -> str:
        first = ch.records[0]
        first_us = int(round(ch.kind.ts_of(first) * 1_000_000))
        return object_key(self.s3.prefix, ch.kind.name, ch.dt, ch.hour, ch.source, ch.partition,
                          first_us, getattr(first, ch.kind.id_field), self.s3.fmt)

    def _put(self, ch: Chunk) -> str:
        """Encode and PUT one file (in a thread). Raises on failure (after boto3's retries)."""
        key = self.key(ch)
        data = encode(ch.records, ch.kind.struct_type, self.s3.fmt)
        meta = {k: v for k, v in ch.metadata().items() if "offset" not in k}
        meta["mirrorscope-first-id"] = str(getattr(ch.records[0], ch.kind.id_field))
        self.s3_client.put_object(Bucket=self.s3.bucket, Key=key, Body=data, Metadata=meta,
                                  ContentType=CONTENT_TYPES[self.s3.fmt],
                                  **sse_args(self.s3.kms_key_id))
        return key

    def _send_cloudwatch(self, datums: list[dict], events: list[dict]) -> None:
        for batch in metric_batches(datums):
            self.cw.put_metric_data(Namespace=self.cw_settings.namespace, MetricData=batch)
        if events:
            self._ensure_stream()
            for batch in log_event_batches(events):
                self.logs.put_log_events(logGroupName=self.cw_settings.log_group,
                                         logStreamName=self.log_stream, logEvents=batch)

    async def flush(self, partition) -> None:
        st = self._parts.get(partition)
        if st is None:
            return
        uploads, st.uploads = st.uploads, []
        for ch in st.batcher.flush():
            uploads.append(self._upload(ch))
        datums = st.metrics.take(self.clock()) if st.metrics else []
        events, st.events = st.events, []
        # What is taken out here is gone from this object whatever happens next: on failure
        # the shard replays from its last snapshot and makes it all again.
        errors = [r for r in await asyncio.gather(*uploads, return_exceptions=True)
                  if isinstance(r, BaseException)]
        if errors:
            self.stats["output_flush_failures"] += 1
            raise OutputError(f"{len(errors)} of {len(uploads)} result files not stored in "
                              f"s3://{self.s3.bucket}: {errors[0]!r}")
        if datums or events:
            try:
                await asyncio.to_thread(self._send_cloudwatch, datums, events)
            except Exception as exc:
                self.stats["output_flush_failures"] += 1
                self.stats["output_cloudwatch_failures"] += 1
                raise OutputError(f"CloudWatch: {exc!r}") from exc
            self.stats["output_cloudwatch_datums"] += len(datums)
            self.stats["output_cloudwatch_events"] += len(events)

    def forget(self, partition) -> None:
        # Its unflushed records belong to batches after its last snapshot: whoever takes the
        # shard next makes them again.
        self._parts.pop(partition, None)

    def close(self) -> None:
        left = sum(st.batcher.pending_records for st in self._parts.values())
        if left:
            log.info("closing with unflushed records (no snapshot includes them: the next "
                     "owner of their shards makes them again)", extra={"records": left})

    def describe(self) -> dict:
        out: dict = {}
        if self.s3 is not None:
            out["s3"] = f"s3://{self.s3.bucket}/{self.s3.prefix}"
        if self.cw_settings is not None:
            out["cloudwatch"] = self.cw_settings.namespace
            if self.log_stream is not None:
                out["alert_log"] = f"{self.cw_settings.log_group}/{self.log_stream}"
        return out


def _retrieve(t: asyncio.Task) -> None:
    if not t.cancelled():
        t.exception()


def from_env(source: str, environ=None, bucket: str | None = None, prefix: str | None = None,
             namespace: str | None = None, log_group: str | None = None,
             timeout: float | None = None, attempts: int | None = None,
             stats: Counter | None = None, region: str | None = None) -> AwsOutputs | None:
    """The outputs the MIRRORSCOPE_S3_* / MIRRORSCOPE_CLOUDWATCH_* settings ask for (the
    sinks' names), or None when neither a bucket nor a CloudWatch namespace or log group is
    given. Explicit arguments win over the environment; ``region`` (the stream's) is used
    when AWS_REGION is not set."""
    import os
    env = os.environ if environ is None else environ
    bucket = bucket or env.get("MIRRORSCOPE_S3_BUCKET") or None
    namespace = namespace or env.get("MIRRORSCOPE_CLOUDWATCH_NAMESPACE") or None
    log_group = log_group or env.get("MIRRORSCOPE_CLOUDWATCH_LOG_GROUP") or None
    net = {k: v for k, v in (("read_timeout", timeout), ("connect_timeout", timeout),
                             ("max_attempts", attempts)) if v is not None}
    if region and not (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")):
        net["region"] = region
    s3 = cw = None
    if bucket:
        s3 = S3Settings.from_env(env, bucket=bucket, prefix=prefix, **net)
    if namespace or log_group:
        cw = CloudWatchSettings.from_env(env, namespace=namespace, log_group=log_group, **net)
    if s3 is None and cw is None:
        return None
    return AwsOutputs(source, s3, cw, stats=stats)
