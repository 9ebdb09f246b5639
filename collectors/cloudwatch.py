"""The collector's own CloudWatch metrics: PutMetricData from the supervisor, no agent.

On EC2 nothing scrapes the Prometheus port, so the shipped alarms (PacketsDropped) need the
collector to publish what they watch. Every ``interval_s`` the supervisor's totals over all
workers are turned into deltas since the last successful call and sent as:

  PacketsReceived   Count         VXLAN datagrams read
  PacketsPublished  Count         records the stream acknowledged
  PacketsDropped    Count         everything lost: admission and decode drops, publish drops,
                                  and the kernel's UDP receive-buffer drops (what the alarm
                                  watches)
  PacketsDroppedByReason  Count   the same per reason with a non-zero delta (Reason=<reason>);
                                  a metric of its own, so no query of PacketsDropped can add
                                  the per-reason series to the total
  KernelUdpDrops    Count         the network namespace's UDP RcvbufErrors
  PublishLatency    Milliseconds  mean time from submit to acknowledgement of the interval's
                                  batches (only when some were acknowledged)

Delivery is at least once: a call that timed out after CloudWatch accepted it is sent again
with the next deltas, so an outage can over-count (never under-count) what the alarms see.

``dimensions`` (e.g. AutoScalingGroupName) are added to every datum; the shipped alarms watch
the metrics without dimensions, so give the alarms the same dimensions if you set any. A failed call is logged
and its deltas are carried into the next one, so a CloudWatch outage delays datapoints but
does not lose them (CloudWatch sums them into the period they are stamped with).

Built on boto3's PutMetricData rather than EMF: EMF needs the CloudWatch agent or a Logs
pipeline on the host, PutMetricData needs only the instance role (cloudwatch:PutMetricData,
confined to the namespace by the iam module).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

import msgspec

log = logging.getLogger("mirrorscope.collect.cloudwatch")

MAX_DATUMS_PER_CALL = 1000  # the PutMetricData limit


class CloudWatchConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Publish the collector's metrics to CloudWatch (docs/collectors.md, "CloudWatch")."""

    enabled: bool = False
    namespace: str = "MirrorScope"
    interval_s: float = 60.0
    region: str | None = None
    endpoint_url: str | None = None
    dimensions: dict[str, str] = {}


def _dropped(snap: dict) -> dict[str, float]:
    """Drops by reason: admission/decode, publish, and the kernel's."""
    out: dict[str, float] = {}
    for group in ("drops", "publish_dropped"):
        for reason, n in (snap.get(group) or {}).items():
            out[reason] = out.get(reason, 0) + n
    out["kernel_rcvbuf"] = snap.get("kernel_rcvbuf_errors", 0)
    return out


def datums(prev: dict, cur: dict, dimensions: dict[str, str], when: datetime) -> list[dict]:
    """The PutMetricData datums of the change from snapshot ``prev`` to ``cur``."""
    base = [{"Name": k, "Value": v} for k, v in sorted(dimensions.items())]

    def d(name: str, value: float, unit: str = "Count", extra: list | None = None) -> dict:
        return {"MetricName": name, "Value": float(value), "Unit": unit, "Timestamp": when,
                "Dimensions": base + (extra or [])}

    def delta(key: str) -> float:
        return max(0, cur.get(key, 0) - prev.get(key, 0))

    before, after = _dropped(prev), _dropped(cur)
    by_reason = {r: max(0, after[r] - before.get(r, 0)) for r in after}
    out = [d("PacketsReceived", delta("received")),
           d("PacketsPublished", delta("published")),
           d("PacketsDropped", sum(by_reason.values())),
           d("KernelUdpDrops", by_reason["kernel_rcvbuf"])]
    out += [d("PacketsDroppedByReason", n, extra=[{"Name": "Reason", "Value": r}])
            for r, n in sorted(by_reason.items()) if n]
    count = delta("publish_latency_count")
    if count:
        out.append(d("PublishLatency", delta("publish_latency_ms_sum") / count, "Milliseconds"))
    return out


class CloudWatchReporter:
    """A daemon thread: every interval, totals() -> deltas -> PutMetricData."""

    def __init__(self, cfg: CloudWatchConfig, totals: Callable[[], dict], client=None):
        self.cfg = cfg
        self.totals = totals
        self._client = client
        self._sent = totals()  # the baseline: what CloudWatch has been told about
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.calls = 0
        self.failures = 0

    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config
            # Short timeouts: the final report runs during shutdown, which must not hang on an
            # unreachable endpoint (the next interval retries anyway).
            self._client = boto3.client(
                "cloudwatch", region_name=self.cfg.region, endpoint_url=self.cfg.endpoint_url,
                config=Config(connect_timeout=5, read_timeout=10,
                              retries={"max_attempts": 3, "mode": "standard"}))
        return self._client

    def report(self) -> bool:
        cur = self.totals()
        batch = datums(self._sent, cur, self.cfg.dimensions, datetime.now(timezone.utc))
        try:
            for i in range(0, len(batch), MAX_DATUMS_PER_CALL):
                self.client().put_metric_data(Namespace=self.cfg.namespace,
                                              MetricData=batch[i:i + MAX_DATUMS_PER_CALL])
        except Exception as exc:  # keep the baseline: the next call carries these deltas
            self.failures += 1
            log.warning("PutMetricData failed; the deltas go with the next call",
                        extra={"error": f"{type(exc).__name__}: {exc}",
                               "failures": self.failures})
            return False
        self.calls += 1
        self._sent = cur
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.interval_s):
            self.report()

    def start(self) -> None:
        log.info("publishing metrics to CloudWatch", extra={
            "namespace": self.cfg.namespace, "interval_s": self.cfg.interval_s,
            "dimensions": self.cfg.dimensions})
        self._thread = threading.Thread(target=self._run, name="cloudwatch-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and send what happened since the last call."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        t0 = time.monotonic()
        self.report()
        log.debug("final CloudWatch report", extra={"seconds": time.monotonic() - t0})
