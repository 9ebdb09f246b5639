"""collectors/cloudwatch.py against a real moto server: the deltas the collector publishes, and
no count lost when CloudWatch is unreachable for a while (the end-to-end path, a live collector
feeding the alarm, is tests/deploy/test_deploy_collector_alarm.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from botocore.config import Config

from collectors.cloudwatch import CloudWatchConfig, CloudWatchReporter, datums
from collectors.stats import Stats
from tests.sink_helpers import client, free_port


def snap(received=0, published=0, bad_vxlan=0, buffer_full=0, kernel=0, lat_sum=0.0, lat_n=0) -> dict:
    s = Stats()
    s.received, s.published = received, published
    s.drops["bad_vxlan"] = bad_vxlan
    s.publish_dropped["buffer_full"] = buffer_full
    s.kernel_rcvbuf_errors = kernel
    s.publish_latency_ms_sum, s.publish_latency_count = lat_sum, lat_n
    return s.snapshot()


def by_name(ds: list[dict]) -> dict:
    return {(d["MetricName"], tuple((x["Name"], x["Value"]) for x in d["Dimensions"])): d["Value"] for d in ds}


def test_datums_are_deltas_with_drops_by_reason_and_mean_latency():
    now = datetime.now(timezone.utc)
    got = by_name(datums(snap(100, 90, 3, 1, 2, 50.0, 5), snap(250, 200, 10, 1, 7, 150.0, 15),
                         {"AutoScalingGroupName": "c"}, now))
    asg = (("AutoScalingGroupName", "c"),)
    assert got == {
        ("PacketsReceived", asg): 150, ("PacketsPublished", asg): 110,
        ("PacketsDropped", asg): 7 + 5,  # decode drops and kernel drops; no new publish drop
        ("KernelUdpDrops", asg): 5,
        ("PacketsDroppedByReason", asg + (("Reason", "bad_vxlan"),)): 7,
        ("PacketsDroppedByReason", asg + (("Reason", "kernel_rcvbuf"),)): 5,
        ("PublishLatency", asg): 10.0,  # 100 ms over 10 batches
    }
    # nothing acknowledged in the interval: no latency datum rather than a made-up zero
    assert ("PublishLatency", ()) not in by_name(datums(snap(1), snap(2), {}, now))


def total(cw, name: str) -> float:
    now = datetime.now(timezone.utc)
    resp = cw.get_metric_statistics(Namespace="MirrorScope", MetricName=name, Period=60, Statistics=["Sum"],
                                     StartTime=now - timedelta(minutes=10), EndTime=now + timedelta(minutes=1))
    return sum(p["Sum"] for p in resp["Datapoints"])


def test_a_failed_call_carries_its_counts_into_the_next(moto):
    current = {"s": snap()}
    cw = client("cloudwatch", moto)
    rep = CloudWatchReporter(CloudWatchConfig(enabled=True), lambda: current["s"], client=cw)

    current["s"] = snap(received=10, bad_vxlan=4)
    assert rep.report() is True
    # CloudWatch unreachable (connection refused: the request never arrives; a request that
    # times out after arriving may be counted twice, see the module's docstring)
    import boto3
    rep._client = boto3.client("cloudwatch", endpoint_url=f"http://127.0.0.1:{free_port()}",
                               region_name="us-east-1", aws_access_key_id="testing",
                               aws_secret_access_key="testing", config=Config(retries={"max_attempts": 1}))
    current["s"] = snap(received=25, bad_vxlan=9)
    assert rep.report() is False and rep.failures == 1
    rep._client = cw
    current["s"] = snap(received=30, bad_vxlan=12)
    assert rep.report() is True

    assert total(cw, "PacketsReceived") == 30  # 10, then 20 (the failed call's 15 and 5 more)
    assert total(cw, "PacketsDropped") == 12
    assert rep.calls == 2
