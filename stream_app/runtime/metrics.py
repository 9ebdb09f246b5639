"""Every Prometheus metric the stream workers export, declared once.

One definition per metric: its family name, type, help, labels and which workers export it
(``all``: `mirrorscope worker` and `mirrorscope kinesis-worker` alike, under the same name;
``kinesis``: the Kinesis consumer's own). Counters read the runtime's (or the Kinesis
consumer's) ``stats`` by the key ``stat``; every declared family is in every scrape, at zero
until it first moves, so an alert on a series that has not happened yet still has something
to watch. docs/distributed.md's metric table is checked against this list by
tests/test_runtime_metrics.py, and so is every ``stats[...]`` key the runtime and the
adapters count.
"""

from __future__ import annotations

import time
from typing import NamedTuple


class Metric(NamedTuple):
    name: str
    """The family name (a counter's samples carry ``_total``)."""
    kind: str
    """counter | gauge"""
    help: str
    labels: tuple[str, ...] = ()
    workers: str = "all"
    """all | kinesis"""
    stat: str | None = None
    """For a counter: the stats key it reads (runtime's for ``all``, the consumer's for
    ``kinesis``)."""


def _c(stat: str, help: str, workers: str = "all") -> Metric:
    prefix = "mirrorscope_worker_" if workers == "all" else "mirrorscope_kinesis_"
    return Metric(prefix + stat, "counter", help, (), workers, stat)


METRICS: tuple[Metric, ...] = (
    # -- the runtime (both workers) ----------------------------------------------------------
    _c("batches", "Packet batches applied"),
    _c("packet_records", "Packet records applied"),
    _c("batches_replayed_skipped", "Batches skipped because the state already included them "
                                   "(replay after a take-over)"),
    _c("batches_undecodable", "Messages that were not packet batches (dropped whole, counted)"),
    _c("batches_not_owned", "Batches for a partition this worker no longer owns (dropped)"),
    _c("batches_failed", "Batches the core raised on: the partition went back to its last "
                         "snapshot"),
    _c("batches_failed_skipped", "Batches skipped whole on replay because the core raised on "
                                 "them"),
    _c("batches_dropped_out_of_order", "Stale batches dropped while seeking back after a gap"),
    _c("offset_gaps", "Gaps in offsets seen (batches fetched before a rebalance)"),
    _c("offsets_lost", "Offsets missing from the packet topic (retention deleted them)"),
    _c("flow_records", "Flow records made"),
    _c("http_records", "HTTP transaction records made"),
    _c("alerts", "Alerts made"),
    _c("dns_records", "DNS transaction records made"),
    _c("tls_records", "TLS handshake records made"),
    _c("ssh_records", "SSH session records made"),
    _c("detect_errors", "Batches whose detectors' state store failed (records sent without "
                        "alerts)"),
    _c("partitions_loaded", "Partition take-overs (state restored from the store)"),
    _c("flows_restored", "Flows restored from the store at take-overs"),
    _c("state_unreadable", "Partition states that could not be read (bad key or version)"),
    _c("checkpoints", "Snapshots stored (and their offsets acked)"),
    _c("checkpoint_errors", "Snapshots the store refused (retried)"),
    _c("state_rewrites", "Whole states written again because the store had lost them"),
    _c("store_errors", "State store calls that failed at take-over (retried)"),
    _c("fenced", "Partitions dropped because another worker took them over"),
    _c("publish_failed", "Checkpoints whose results the broker did not take (the worker "
                         "stops)"),
    _c("core_crashes", "Core processes that died (replaced; partitions restored)"),
    _c("agent_crashes", "Crashes of the packet agent (Kafka worker)"),
    # results written straight to S3/CloudWatch (runtime/aws_outputs.py; zero otherwise)
    _c("output_files", "Result files stored in S3 by the worker itself (Kinesis without Kafka)"),
    _c("output_records", "Records in those files"),
    _c("output_put_failures", "S3 PUTs of result files that failed (after their retries)"),
    _c("output_cloudwatch_datums", "Metric datums the worker sent to CloudWatch itself"),
    _c("output_cloudwatch_events", "Alert log events the worker sent to CloudWatch Logs itself"),
    _c("output_cloudwatch_failures", "CloudWatch calls of the worker that failed (after their retries)"),
    _c("output_flush_failures", "Checkpoints held back because S3 or CloudWatch did not take their results"),
    Metric("mirrorscope_worker_redis_round_trips", "counter",
           "Round trips to Redis (state, leases, detectors)"),
    Metric("mirrorscope_worker_flows_held", "gauge", "Open flows held in memory"),
    Metric("mirrorscope_worker_partitions_owned", "gauge", "Partitions (shards) owned"),
    Metric("mirrorscope_worker_packet_records_per_second", "gauge",
           "Packet records applied per second (since the last scrape)"),
    Metric("mirrorscope_worker_consumer_lag", "gauge",
           "Per partition: Kafka, batches not yet applied; Kinesis, milliseconds behind the "
           "stream's tip", ("partition",)),
    Metric("mirrorscope_worker_partitions_stalled", "gauge",
           "Partitions with lag whose applied offset has not moved for stall_after seconds"),
    Metric("mirrorscope_worker_ready", "gauge",
           "1 when /readyz says ready (no crashed agent or core, no stalled partition)"),
    # -- the Kinesis consumer ----------------------------------------------------------------
    _c("records_received", "Kinesis records received", "kinesis"),
    _c("batches_received", "Packet batches (KPL user records) received", "kinesis"),
    _c("batches_applied", "Packet batches applied", "kinesis"),
    _c("batches_skipped", "Packet batches skipped (replayed or not owned)", "kinesis"),
    _c("undecodable", "Records or user records that were not packet batches", "kinesis"),
    _c("get_records_nonempty", "GetRecords calls that returned records", "kinesis"),
    _c("get_records_throttled", "GetRecords calls throttled", "kinesis"),
    _c("get_records_errors", "GetRecords calls that failed otherwise", "kinesis"),
    _c("iterators_expired", "Shard iterators that expired", "kinesis"),
    _c("position_expired", "Checkpointed positions past the stream's retention", "kinesis"),
    _c("list_shards_errors", "ListShards calls that failed", "kinesis"),
    _c("lease_round_errors", "Lease rounds that failed (Redis or Kinesis unreachable)",
       "kinesis"),
    _c("registry_lost", "Times this worker's heartbeat had vanished (Redis restarted)",
       "kinesis"),
    _c("leases_acquired", "Shard leases taken", "kinesis"),
    _c("leases_released", "Shard leases handed back", "kinesis"),
    _c("leases_lost", "Shard leases lost to another worker or to time", "kinesis"),
    _c("leases_retaken", "Lease keys found vanished and set again", "kinesis"),
    _c("shard_errors", "Shard consumers that failed", "kinesis"),
    _c("shard_restarts", "Shards sent back to their last snapshot (results lost on the way "
                         "out)", "kinesis"),
    _c("shards_finished", "Shards read to their end after resharding", "kinesis"),
    Metric("mirrorscope_kinesis_shards_owned", "gauge", "Shard leases held", workers="kinesis"),
    Metric("mirrorscope_kinesis_live_workers", "gauge", "Workers with a live heartbeat",
           workers="kinesis"),
    Metric("mirrorscope_kinesis_millis_behind_latest", "gauge",
           "GetRecords' MillisBehindLatest per shard", ("shard",), "kinesis"),
)

BY_NAME = {m.name: m for m in METRICS}


class WorkerMetrics:
    """A prometheus_client collector over the declared metrics, read at each scrape from the
    counters the runtime (and the Kinesis consumer) keep: no second copy to keep in step.

    ``round_trips()``: Redis round trips so far; ``kinesis``: the KinesisConsumer, for the
    kinesis-worker's own families."""

    def __init__(self, runtime, round_trips, kinesis=None):
        from prometheus_client import CollectorRegistry
        self.runtime = runtime
        self.round_trips = round_trips
        self.kinesis = kinesis
        self._last: tuple[float | None, int] = (None, 0)
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def _value(self, m: Metric):
        rt = self.runtime
        if m.stat is not None:
            src = rt.stats if m.workers == "all" else self.kinesis.stats
            return src.get(m.stat, 0)
        n = m.name.removeprefix("mirrorscope_worker_").removeprefix("mirrorscope_kinesis_")
        if n == "redis_round_trips":
            return self.round_trips()
        if n == "flows_held":
            return rt.flows_held()
        if n == "partitions_owned":
            return len(rt.owned)
        if n == "packet_records_per_second":
            now, c = time.monotonic(), rt.stats.get("packet_records", 0)
            t0, c0 = self._last
            self._last = (now, c)
            return (c - c0) / (now - t0) if t0 is not None and now > t0 else 0
        if n == "consumer_lag":
            from stream_app.runtime.runtime import label
            return [([label(tp)], v) for tp, v in list(rt.lag.items())]
        if n == "partitions_stalled":
            return len(rt.stalled())
        if n == "ready":
            return 1 if rt.health()[0] else 0
        k = self.kinesis
        if n == "shards_owned":
            return len(k.owned)
        if n == "live_workers":
            return len(k.live)
        if n == "millis_behind_latest":
            return [([sid], h.behind_ms) for sid, h in list(k.owned.items())
                    if h.behind_ms is not None]
        raise KeyError(m.name)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        for m in METRICS:
            if m.workers == "kinesis" and self.kinesis is None:
                continue
            v = self._value(m)
            fam = CounterMetricFamily if m.kind == "counter" else GaugeMetricFamily
            if m.labels:
                f = fam(m.name, m.help, labels=list(m.labels))
                for labels, x in v:
                    f.add_metric(labels, x)
            else:
                f = fam(m.name, m.help, value=v)
            yield f

    def render(self) -> bytes:
        from prometheus_client import generate_latest
        return generate_latest(self.registry)
