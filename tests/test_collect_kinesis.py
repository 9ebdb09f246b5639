"""`mirrorscope collect` publishing to Kinesis through moto's server (a real HTTP endpoint;
moto maps partition keys to shards by MD5 like the service), plus VNI discovery through
moto's EC2 traffic-mirroring API."""

from __future__ import annotations

import base64
import collections
import json
import time

import boto3
import msgspec
from aws_kinesis_agg.deaggregator import deaggregate_records

from collectors.flowkey import flow_key, partition_key
from collectors.kpl import MAGIC
from collectors.partition import kinesis_hash, kinesis_partition_key
from schemas.records import PACKET_BATCH_VERSION, PacketBatch
from tests.services.collector_proc import Collector
from tests.services.fixtures import aws, moto_server  # noqa: F401
from tests.services.traffic import capture_of, tcp_flows, write_pcap

DEC = msgspec.msgpack.Decoder(PacketBatch)


def read_stream(client, stream: str) -> dict[str, list[dict]]:
    """Every record of every shard: shard id -> list of Kinesis records."""
    out: dict[str, list[dict]] = {}
    for sh in client.list_shards(StreamName=stream)["Shards"]:
        it = client.get_shard_iterator(StreamName=stream, ShardId=sh["ShardId"],
                                       ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        recs: list[dict] = []
        for _ in range(1000):
            resp = client.get_records(ShardIterator=it, Limit=10000)
            recs.extend(resp["Records"])
            it = resp.get("NextShardIterator")
            if not resp["Records"] or not it:
                break
        out[sh["ShardId"]] = recs
    return out


def test_replay_into_kinesis_aggregated_per_shard(aws, tmp_path):  # noqa: F811
    """Records arrive KPL-aggregated (readable by aws-kinesis-agg), each aggregate on the
    shard that its user records' partition keys map to, every flow on one shard, with the
    VNI enrichment as a record tag; counts reconcile exactly."""
    client = boto3.client("kinesis", endpoint_url=aws, region_name="us-east-1")
    client.create_stream(StreamName="mirror", ShardCount=4)
    shards = {s["ShardId"]: (int(s["HashKeyRange"]["StartingHashKey"]),
                             int(s["HashKeyRange"]["EndingHashKey"]))
              for s in client.list_shards(StreamName="mirror")["Shards"]}
    datagrams = tcp_flows(600, seed=31)
    pcap = tmp_path / "flows.pcap"
    write_pcap(pcap, capture_of(datagrams))
    vni_map = tmp_path / "vnis.yaml"
    vni_map.write_text("vnis:\n  1234: {session_id: tms-0123, interface_id: eni-0abc, "
                       "instance_id: i-0def, vpc_id: vpc-01, subnet_id: subnet-01, "
                       "account_id: '123456789012', region: us-east-1}\n")
    c = Collector(["--pcap", str(pcap), "--transport", "kinesis", "--kinesis-stream", "mirror",
                   "--kinesis-endpoint-url", aws, "--kinesis-region", "us-east-1",
                   "--batch-records", "40", "--vni-map", str(vni_map)],
                  tmp_path).start()
    s = c.wait(timeout=120)
    t = s["totals"]
    assert s["reconciled"], s["problems"]
    assert t["received"] == t["published"] == len(datagrams)
    assert t["queued_records"] == 0 and t["queued_bytes"] == 0

    per_shard = read_stream(client, "mirror")
    assert sum(map(len, per_shard.values())) > 0
    flows: dict[tuple, set[str]] = collections.defaultdict(set)
    n_records = n_user = 0
    for shard_id, recs in per_shard.items():
        lo, hi = shards[shard_id]
        for rec in recs:
            data = rec["Data"]
            assert data.startswith(MAGIC), "every Kinesis record is a KPL aggregate"
            assert len(data) <= 1 << 20
            assert lo <= kinesis_hash(rec["PartitionKey"]) <= hi
            users = deaggregate_records([{"kinesis": {
                "data": base64.b64encode(data).decode(), "partitionKey": rec["PartitionKey"],
                "explicitHashKey": None, "sequenceNumber": rec["SequenceNumber"],
                "approximateArrivalTimestamp": 0, "kinesisSchemaVersion": "1.0"}}])
            assert len(users) >= 1
            for u in users:
                n_user += 1
                pk = u["kinesis"]["partitionKey"]
                assert lo <= kinesis_hash(pk) <= hi, "user record on the wrong shard"
                batch = DEC.decode(base64.b64decode(u["kinesis"]["data"]))
                assert batch.version == PACKET_BATCH_VERSION
                assert kinesis_partition_key(batch.partition_key) == pk
                for r in batch.records:
                    fpk = kinesis_partition_key(partition_key(flow_key(r)[0]))
                    assert lo <= kinesis_hash(fpk) <= hi
                    flows[flow_key(r)[0]].add(shard_id)
                    n_records += 1
    assert n_records == t["published"]
    assert n_user == t["batches_published"]
    assert len(flows) == 600 and all(len(v) == 1 for v in flows.values())
    assert len({next(iter(v)) for v in flows.values()}) == 4  # the flows spread over all shards
    # Several user records share an aggregate (that is what aggregation is for).
    assert n_user > sum(map(len, per_shard.values()))
    # The enrichment travels as a KPL tag, which our reader returns.
    from collectors.kpl import deaggregate
    any_rec = next(r for recs in per_shard.values() for r in recs)
    tags = deaggregate(any_rec["Data"])[0][3]
    assert json.loads(tags["mirrorscope.vni"])["1234"]["interface_id"] == "eni-0abc"


def test_kinesis_partial_failures_are_retried(tmp_path):
    """PutRecords answers some entries with ProvisionedThroughputExceeded: those are retried
    with backoff until accepted; nothing is lost or duplicated. (moto never throttles, so a
    stand-in client injects the failures here.)"""
    from collectors.config import CollectConfig, KinesisConfig
    from collectors.worker import replay

    class Throttling:
        meta = None

        def __init__(self):
            self.calls = 0
            self.accepted: list[bytes] = []
            self.failed_once: set[bytes] = set()

        def list_shards(self, **kw):
            half = (1 << 127)
            return {"Shards": [
                {"ShardId": "shardId-0", "HashKeyRange": {"StartingHashKey": "0",
                                                          "EndingHashKey": str(half - 1)},
                 "SequenceNumberRange": {"StartingSequenceNumber": "0"}},
                {"ShardId": "shardId-1", "HashKeyRange": {"StartingHashKey": str(half),
                                                          "EndingHashKey": str((1 << 128) - 1)},
                 "SequenceNumberRange": {"StartingSequenceNumber": "0"}}]}

        def put_records(self, StreamName, Records):
            self.calls += 1
            if self.calls == 2:
                raise ConnectionError("endpoint unreachable")
            out = []
            for e in Records:
                assert len(e["Data"]) <= 1 << 20
                d = e["Data"]
                if d not in self.failed_once and len(self.failed_once) < 5:
                    self.failed_once.add(d)
                    out.append({"ErrorCode": "ProvisionedThroughputExceededException",
                                "ErrorMessage": "slow down"})
                    continue
                h = int(e["ExplicitHashKey"])
                self.accepted.append(d)
                out.append({"ShardId": "shardId-0" if h < (1 << 127) else "shardId-1",
                            "SequenceNumber": str(len(self.accepted))})
            return {"FailedRecordCount": sum(1 for o in out if "ErrorCode" in o), "Records": out}

    pcap = tmp_path / "f.pcap"
    datagrams = tcp_flows(300, seed=41)
    write_pcap(pcap, capture_of(datagrams))
    cfg = CollectConfig(transport="kinesis", kinesis=KinesisConfig(
        stream="s", retry_backoff_ms=5, max_backoff_ms=50, senders=2,
        max_record_bytes=20_000))  # small aggregates: many entries to fail
    cfg.batch.max_records = 30
    stub = Throttling()
    snap = replay(cfg, [str(pcap)], kinesis_client=stub)
    assert snap["published"] == len(datagrams)
    assert sum(snap["publish_dropped"].values()) == 0
    assert snap["publish_errors"] >= 6  # 5 throttled entries + the failed call
    assert len(stub.accepted) == len(set(stub.accepted))
    from collectors.kpl import deaggregate
    total = sum(len(DEC.decode(u[2]).records) for d in stub.accepted for u in deaggregate(d))
    assert total == len(datagrams)


def test_vni_discovery_through_ec2(aws):  # noqa: F811
    """DescribeTrafficMirrorSessions + DescribeNetworkInterfaces give each VNI its session,
    ENI, instance, VPC, subnet, account and region."""
    from collectors.config import EnrichmentConfig
    from collectors.enrich import Enricher

    ec2 = boto3.client("ec2", endpoint_url=aws, region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SubnetId=subnet,
                             InstanceType="t3.micro")["Instances"][0]
    eni = inst["NetworkInterfaces"][0]["NetworkInterfaceId"]
    target_eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    target = ec2.create_traffic_mirror_target(NetworkInterfaceId=target_eni)
    target_id = target["TrafficMirrorTarget"]["TrafficMirrorTargetId"]
    filt = ec2.create_traffic_mirror_filter()["TrafficMirrorFilter"]["TrafficMirrorFilterId"]
    sess = ec2.create_traffic_mirror_session(
        NetworkInterfaceId=eni, TrafficMirrorTargetId=target_id,
        TrafficMirrorFilterId=filt, SessionNumber=1, VirtualNetworkId=4242)
    sid = sess["TrafficMirrorSession"]["TrafficMirrorSessionId"]

    e = Enricher.from_config(EnrichmentConfig(discover=True, endpoint_url=aws,
                                              region="us-east-1"))
    e.start()
    try:
        info = e.get(4242)
        assert info is not None
        assert info.session_id == sid
        assert info.interface_id == eni
        assert info.instance_id == inst["InstanceId"]
        assert info.vpc_id == vpc and info.subnet_id == subnet
        assert info.region == "us-east-1" and info.account_id
        assert e.get(999) is None and e.lookups_failed == 1
        # Flow records take the fields where they are empty.
        from schemas.records import FlowRecord
        fields = {f: None for f in FlowRecord.__struct_fields__}
        f = FlowRecord(**{**fields, "vni": 4242})
        e.fill_flow(f)
        assert f.interface_id == eni and f.vpc_id == vpc and f.instance_id == inst["InstanceId"]
    finally:
        e.stop()



def test_kinesis_outage_keeps_a_bounded_buffer_then_delivers():
    """The endpoint fails every call for a while: sealed aggregates wait (retried with
    backoff) up to the buffer bound, the excess is dropped and counted, and the rest is
    delivered once the endpoint answers again. Never blocks the caller."""
    from collectors.config import BatchConfig, KinesisConfig
    from collectors.decode import Decoder, PayloadPolicy
    from collectors.pipeline import Pipeline
    from collectors.publishers import KinesisPublisher
    from collectors.stats import Stats, reconcile

    class Flaky:
        down = True
        accepted = 0

        def list_shards(self, **kw):
            return {"Shards": [{"ShardId": "s0", "HashKeyRange": {
                "StartingHashKey": "0", "EndingHashKey": str((1 << 128) - 1)},
                "SequenceNumberRange": {"StartingSequenceNumber": "0"}}]}

        def put_records(self, StreamName, Records):
            if self.down:
                raise ConnectionError("no route to host")
            self.accepted += len(Records)
            return {"Records": [{"ShardId": "s0", "SequenceNumber": "1"} for _ in Records]}

    stub = Flaky()
    st = Stats()
    pub = KinesisPublisher(KinesisConfig(stream="s", retry_backoff_ms=5, max_backoff_ms=20,
                                         max_retries=1_000_000, senders=1),
                           40_000, 0.0, st, "t", client=stub)
    pub.start()
    pl = Pipeline(BatchConfig(max_records=20, max_bytes=1 << 20, linger_ms=0), pub, st)
    dec = Decoder(payload=PayloadPolicy(max_bytes=500, ports=frozenset([80])))
    recs = [dec.decode_vxlan(d.payload, b"\x0a\x00\x00\x05", i)
            for i, d in enumerate(tcp_flows(200, seed=51))]
    st.received = st.decoded = len(recs)
    t = time.monotonic()
    for i in range(0, len(recs), 50):
        now = time.monotonic()
        pl.add(recs[i:i + 50], now)
        pl.tick(now + 1)
        pub.poll(now + 1)
    assert time.monotonic() - t < 2.0  # the caller never waited for the endpoint
    assert st.publish_dropped["buffer_full"] > 0
    assert pub.inflight_bytes() <= 40_000
    stub.down = False
    pl.flush_all()
    pub.flush(10.0)
    pub.close(1.0)
    snap = st.snapshot()
    snap["queued_records"] = pub.inflight_records()
    assert snap["queued_records"] == 0
    assert snap["published"] == len(recs) - snap["publish_dropped"]["buffer_full"] > 0
    assert reconcile(snap) == []
