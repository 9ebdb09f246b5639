"""The collector's parts without external services: settings, the mirror filter, the
partitioner, KPL aggregation, batching and accounting, the UDP receiver, enrichment files,
and the process supervisor (live, with the null transport)."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from collectors.config import (
    ENV_PATHS,
    ConfigError,
    FilterRule,
    PortRange,
    env_overrides,
    load_config,
)
from collectors.decode import Decoder, PayloadPolicy
from collectors.enrich import Enricher, VniInfo, load_mapping_file
from collectors.flowkey import flow_key, partition_key
from collectors.kpl import Aggregate, deaggregate
from collectors.mirrorfilter import MirrorFilter
from collectors.partition import ShardMap, kafka_partition, kinesis_hash, murmur2
from collectors.pipeline import Pipeline
from collectors.publishers import NullPublisher
from collectors.stats import Stats, reconcile
from collectors.udp import SLOT, Receiver, open_socket, socket_drops, socket_inode
from tests.services.collector_proc import Collector, metric_value
from tests.services.traffic import send, tcp_flows
from tests.waiting import wait_until

M = "mirrorscope_collector_"
A = socket.inet_aton
# kafka-python 3 loads its protocol files with a deprecated importlib call.
pytestmark = pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")


# -- settings ---------------------------------------------------------------------------------

def test_settings_file_then_environment_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("listen: {port: 5000, address: 127.0.0.1}\nprocesses: 3\n"
                 "kafka: {bootstrap: file:9092, topic: from-file}\nlog_level: warning\n")
    env = {"MIRRORSCOPE_LISTEN_PORT": "6000", "MIRRORSCOPE_KAFKA_BOOTSTRAP": "env:9092",
           "MIRRORSCOPE_SOURCE_CIDRS": "[10.0.0.0/8, 192.168.0.0/16]",
           "MIRRORSCOPE_PAYLOAD_PORTS": "[80, 8080]", "MIRRORSCOPE_REDIS_URL": "ignored",
           "MIRRORSCOPE_PARTITIONS": "12"}
    cfg = load_config(f, env, {"kafka": {"bootstrap": "flag:9092"}})
    assert cfg.listen.port == 6000 and cfg.listen.address == "127.0.0.1"
    assert cfg.processes == 3 and cfg.log_level == "warning"
    assert cfg.kafka.bootstrap == "flag:9092" and cfg.kafka.topic == "from-file"
    assert cfg.source_cidrs == ["10.0.0.0/8", "192.168.0.0/16"]
    assert cfg.payload.ports == [80, 8080]
    assert cfg.health.port == 8081 and cfg.health.path == "/healthz"
    assert cfg.metrics.port == 9108 and cfg.metrics.path == "/metrics"


def test_environment_names_of_the_deployment_code():
    """The names the Terraform module and the Helm chart set."""
    env = {"MIRRORSCOPE_TRANSPORT": "kinesis", "MIRRORSCOPE_KINESIS_STREAM": "s",
           "MIRRORSCOPE_KAFKA_SECURITY": "SASL_SSL", "MIRRORSCOPE_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM",
           "MIRRORSCOPE_COLLECT_PROCESSES": "0", "MIRRORSCOPE_TOPIC_PACKETS": "p",
           "MIRRORSCOPE_HEALTH_PORT": "18081", "MIRRORSCOPE_METRICS_PORT": "19108",
           "MIRRORSCOPE_LOG_LEVEL": "debug"}
    cfg = load_config(None, env)
    assert cfg.transport == "kinesis" and cfg.kinesis.stream == "s"
    assert cfg.kafka.security_protocol == "SASL_SSL" and cfg.kafka.sasl_mechanism == "AWS_MSK_IAM"
    assert cfg.processes == 0 and cfg.kafka.topic == "p"
    assert (cfg.health.port, cfg.metrics.port, cfg.log_level) == (18081, 19108, "debug")
    # The exact name wins over an alias.
    assert env_overrides({"MIRRORSCOPE_TOPIC_PACKETS": "a",
                          "MIRRORSCOPE_KAFKA_TOPIC": "b"})["kafka"]["topic"] == "b"
    assert len(set(ENV_PATHS.values())) == len(ENV_PATHS)
    # Plain values are read as the setting's type: "null" is a transport, not None.
    cfg = load_config(None, {"MIRRORSCOPE_TRANSPORT": "null", "MIRRORSCOPE_LISTEN_PORT": "6000",
                             "MIRRORSCOPE_ENRICHMENT_DISCOVER": "true",
                             "MIRRORSCOPE_KAFKA_CLIENT_ID": "123"})
    assert (cfg.transport, cfg.listen.port, cfg.enrichment.discover, cfg.kafka.client_id) == \
        ("null", 6000, True, "123")
    # An empty variable is not set (charts render unset values as "").
    assert load_config(None, {"MIRRORSCOPE_KINESIS_STREAM": "", "MIRRORSCOPE_LISTEN_PORT": " "}
                       ).listen.port == 4789
    # Batch sizes default per transport.
    assert (cfg.batch.max_records, cfg.batch.max_bytes) == (500, 128 << 10)
    assert load_config(None, {}).batch.max_records == 2000


def test_terraform_modules_config_file_loads(tmp_path):
    """What terraform/modules/collectors writes to /etc/mirrorscope/config.yaml."""
    rules = [{"rule_number": 100, "direction": "ingress", "action": "accept", "protocol": 6,
              "source_cidr": "0.0.0.0/0", "destination_cidr": "0.0.0.0/0",
              "source_port_range": None,
              "destination_port_range": {"from_port": 80, "to_port": 80},
              "description": "HTTP in"}]
    f = tmp_path / "config.yaml"
    f.write_text(yaml.safe_dump({"listen": {"address": "0.0.0.0", "port": 4789}, "processes": 0,
                                 "health": {"port": 8081}, "metrics": {"port": 9108},
                                 "filter": {"rules": rules}}))
    cfg = load_config(f, {})
    assert cfg.filter.rules[0].destination_port_range == PortRange(80, 80)
    assert cfg.health.path == "/healthz"


@pytest.mark.parametrize("over, setting", [
    ({"listen": {"port": 70000}}, "listen.port"),
    ({"source_cidrs": ["10.0.0.0/33"]}, "source_cidrs"),
    ({"vnis": [1 << 24]}, "vnis"),
    ({"transport": "kinesis"}, "kinesis.stream"),
    ({"transport": "embedded"}, "embedded.out_dir"),
    ({"filter": {"rules": [{"rule_number": 1, "direction": "ingress", "action": "accept",
                            "destination_port_range": {"from_port": 80, "to_port": 80}}]}},
     "filter.rules"),
    ({"filter": {"rules": [{"rule_number": 1, "direction": "sideways", "action": "accept"}]}},
     "direction"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_settings_name_the_setting(over, setting):
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        load_config(None, {}, over)


def test_cli_reports_a_bad_setting(tmp_path):
    exe = str(Path(sys.executable).parent / "mirrorscope")
    r = subprocess.run([exe, "collect", "--port", "99999"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "listen.port" in r.stderr
    r = subprocess.run([exe, "collect", "--print-config", "--kafka-bootstrap", "k:1"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MIRRORSCOPE_KAFKA_SASL_PLAIN_PASSWORD": "secret"})
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["kafka"]["bootstrap"] == "k:1" and d["kafka"]["sasl_plain_password"] == "***"


# -- the mirror filter --------------------------------------------------------------------

def rule(n, direction, action, **kw):
    return FilterRule(rule_number=n, direction=direction, action=action, **kw)


def test_filter_first_match_by_rule_number_and_no_match_rejects():
    f = MirrorFilter([
        rule(200, "ingress", "accept", protocol=6),
        rule(100, "ingress", "reject", protocol=6, source_cidr="10.9.0.0/16"),
        rule(300, "ingress", "accept", protocol=17,
             destination_port_range=PortRange(53, 53)),
        rule(100, "egress", "accept", protocol=None, destination_cidr="10.0.0.0/8"),
    ])
    ok = f.accepts_tuple
    assert ok("ingress", 6, A("10.1.1.1"), A("10.0.0.5"), 40000, 80)
    assert not ok("ingress", 6, A("10.9.1.1"), A("10.0.0.5"), 40000, 80)  # 100 before 200
    assert ok("ingress", 17, A("10.1.1.1"), A("10.0.0.5"), 5353, 53)
    assert not ok("ingress", 17, A("10.1.1.1"), A("10.0.0.5"), 5353, 54)  # no match rejects
    assert not ok("ingress", 1, A("10.1.1.1"), A("10.0.0.5"), 8, 0)
    assert ok("egress", 1, A("10.0.0.5"), A("10.1.1.1"), 0, 0)  # protocol None = all
    assert not ok("egress", 6, A("10.0.0.5"), A("8.8.8.8"), 80, 40000)
    # Unknown direction: either direction's rules may accept it.
    assert ok(None, 6, A("10.1.1.1"), A("10.0.0.5"), 40000, 80)
    assert ok(None, 1, A("10.0.0.5"), A("10.1.1.1"), 0, 0)
    assert not ok(None, 17, A("10.0.0.5"), A("8.8.8.8"), 1, 2)


def test_filter_port_ranges_cidrs_and_ipv6():
    f = MirrorFilter([
        rule(1, "ingress", "accept", protocol=6, source_cidr="::/0", destination_cidr="2001:db8::/32",
             source_port_range=PortRange(1024, 65535), destination_port_range=PortRange(8000, 8080)),
        rule(2, "ingress", "accept", protocol=6, source_cidr="0.0.0.0/0",
             destination_cidr="192.168.1.0/24"),
    ])
    v6a, v6b = socket.inet_pton(socket.AF_INET6, "2001:db9::1"), \
        socket.inet_pton(socket.AF_INET6, "2001:db8::7")
    assert f.accepts_tuple("ingress", 6, v6a, v6b, 5000, 8080)
    assert not f.accepts_tuple("ingress", 6, v6a, v6b, 500, 8080)
    assert not f.accepts_tuple("ingress", 6, v6a, v6b, 5000, 8081)
    assert not f.accepts_tuple("ingress", 6, v6b, v6a, 5000, 8080)
    assert f.accepts_tuple("ingress", 6, A("1.2.3.4"), A("192.168.1.200"), 1, 2)
    assert not f.accepts_tuple("ingress", 6, A("1.2.3.4"), A("192.168.2.1"), 1, 2)
    # An IPv4 rule never matches IPv6 and the reverse.
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:192.168.1.1")
    assert not f.accepts_tuple("ingress", 6, v6a, mapped, 1, 2)
    assert MirrorFilter.from_rules([]) is None  # no rules: no local filter


# -- partitioning and aggregation ----------------------------------------------------------

def test_murmur2_matches_kafka_python():
    from kafka.partitioner.default import murmur2 as ref
    rnd = random.Random(1)
    for _ in range(3000):
        k = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 80)))
        assert murmur2(k) == ref(k) & 0xFFFFFFFF
    # Known answers of Kafka's Java client (its tests' vectors).
    assert kafka_partition(b"21", 2 ** 31 - 1) == (-973932308 & 0x7FFFFFFF) % (2 ** 31 - 1)


def test_kpl_aggregate_reads_back_with_aws_kinesis_agg():
    from aws_kinesis_agg.deaggregator import deaggregate_records
    rnd = random.Random(2)
    agg = Aggregate()
    users = []
    for i in range(200):
        pk = rnd.randbytes(rnd.randrange(1, 45)).hex()
        data = rnd.randbytes(rnd.randrange(0, 3000))
        tags = [("mirrorscope.vni", '{"1": {}}')] if i % 7 == 0 else None
        grow = agg.added_size(pk, len(data), None, tags)
        before = agg.size
        agg.add(pk, data, None, tags)
        assert agg.size - before == grow
        users.append((pk, data))
    blob = agg.serialize()
    assert len(blob) == agg.size and blob[:4] == b"\xf3\x89\x9a\xc2"
    got = deaggregate_records([{"kinesis": {"data": base64.b64encode(blob).decode(),
                                            "partitionKey": "x", "explicitHashKey": None,
                                            "sequenceNumber": "1",
                                            "approximateArrivalTimestamp": 0,
                                            "kinesisSchemaVersion": "1.0"}}])
    assert [(g["kinesis"]["partitionKey"], base64.b64decode(g["kinesis"]["data"])) for g in got] == users
    assert [(u[0], u[2]) for u in deaggregate(blob)] == users


def test_shard_map_ranges():
    shards = [{"ShardId": f"s{i}", "HashKeyRange": {"StartingHashKey": str(i << 126),
                                                      "EndingHashKey": str(((i + 1) << 126) - 1)},
               "SequenceNumberRange": {"StartingSequenceNumber": "0"}} for i in range(4)]
    shards.append({"ShardId": "closed", "HashKeyRange": {"StartingHashKey": "0",
                                                         "EndingHashKey": str((1 << 128) - 1)},
                   "SequenceNumberRange": {"StartingSequenceNumber": "0",
                                           "EndingSequenceNumber": "9"}})
    m = ShardMap(shards)
    assert len(m) == 4
    for key in (b"a", b"bb", b"\x00" * 20):
        i = m.index_for_key(key)
        assert m.starts[i] <= kinesis_hash(key.hex()) <= m.ends[i]


# -- batching and accounting ---------------------------------------------------------------

def records(n_flows=50, vni=1234):
    dec = Decoder(payload=PayloadPolicy(max_bytes=100, ports=frozenset([80])))
    return [dec.decode_vxlan(d.payload, A("10.0.0.5"), i)
            for i, d in enumerate(tcp_flows(n_flows, vni=vni, response_len=300))]


class Capture(NullPublisher):
    def __init__(self, stats, partitions=8):
        super().__init__(stats, "t", partitions)
        self.batches: list[tuple[int, bytes, list]] = []

    def submit(self, p, key, recs, est_bytes, block=False):
        self.batches.append((p, key, list(recs)))
        super().submit(p, key, recs, est_bytes, block)


def test_pipeline_batches_per_partition_and_accounts_everything():
    from collectors.config import BatchConfig
    st = Stats()
    pub = Capture(st)
    mf = MirrorFilter([rule(1, "ingress", "accept", protocol=6),
                       rule(1, "egress", "accept", protocol=6, source_port_range=PortRange(80, 80))])
    pl = Pipeline(BatchConfig(max_records=7, max_bytes=1 << 20, linger_ms=1000), pub, st, mf)
    recs = records()
    st.received = st.decoded = len(recs)
    pl.add(recs, 0.0)
    assert all(len(b[2]) == 7 for b in pub.batches)
    pl.tick(0.5)  # not yet lingered
    n_before = len(pub.batches)
    pl.tick(2.0)
    assert len(pub.batches) > n_before and pl.pending_records() == 0
    seen: dict = {}
    for p, key, rs in pub.batches:
        assert key == partition_key(flow_key(rs[0])[0])
        for r in rs:
            fk = flow_key(r)[0]
            assert kafka_partition(partition_key(fk), 8) == p
            seen.setdefault(fk, []).append(r.ts_ns)
    for ts in seen.values():
        assert ts == sorted(ts)
    snap = st.snapshot()
    assert snap["published"] == len(recs) and snap["filtered_out"] == 0
    assert snap["payload_full"] == 50 and snap["payload_cut"] == 50  # request whole, response cut
    assert reconcile(snap) == []
    # Egress from a port other than 80 is rejected by the egress rules.
    odd = [r for r in records(5) if r.sport == 80]
    for r in odd:
        r.sport = 81
    pl.add(odd, 3.0)
    assert st.filtered_out == len(odd)


def test_pipeline_bytes_bound_and_reconcile_detects_a_gap():
    from collectors.config import BatchConfig
    st = Stats()
    pub = Capture(st, partitions=1)
    pl = Pipeline(BatchConfig(max_records=10_000, max_bytes=2048, linger_ms=50), pub, st)
    pl.add(records(20), 0.0)
    assert len(pub.batches) > 1
    assert all(sum(len(r.payload) + 64 for r in b[2][:-1]) < 2048 for b in pub.batches)
    snap = st.snapshot()
    snap["received"] = snap["decoded"] = snap["published"] + pl.pending_records()
    snap["queued_records"] = pl.pending_records()
    assert reconcile(snap) == []
    snap["received"] += 1
    assert reconcile(snap) and "received" in reconcile(snap)[0]


def test_buffer_bound_drops_are_counted():
    """A publisher whose destination never answers: beyond the bound, batches are dropped and
    counted, and the packet path never waits."""
    from collectors.config import BatchConfig, KafkaConfig
    from collectors.publishers import KafkaPublisher

    class Hung:
        def send(self, *a, **kw):
            class F:
                def add_callback(self, *a):
                    pass

                def add_errback(self, *a):
                    pass
            return F()

    st = Stats()
    pub = KafkaPublisher(KafkaConfig(), 20_000, st, "t")
    pub.producer, pub.partitions, pub.ready = Hung(), 4, True
    pl = Pipeline(BatchConfig(max_records=20, max_bytes=1 << 20, linger_ms=10), pub, st)
    recs = records(100)
    t = time.monotonic()
    pl.add(recs, 0.0)
    pl.flush_all()
    assert time.monotonic() - t < 1.0
    assert st.publish_dropped["buffer_full"] > 0
    assert pub.inflight_bytes() <= 20_000
    assert st.publish_dropped["buffer_full"] + pub.inflight_records() == len(recs)


# -- the UDP receiver -----------------------------------------------------------------------

@pytest.mark.parametrize("fallback", [False, True])
def test_receiver_reads_batches_with_sources(fallback):
    sock, granted = open_socket("127.0.0.1", 0, 1 << 20)
    port = sock.getsockname()[1]
    rx = Receiver(sock, 16, force_fallback=fallback)
    assert rx.mmsg is not fallback
    payloads = [os.urandom(random.Random(i).randrange(1, 1400)) for i in range(40)]
    big = os.urandom(SLOT + 100)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.3", 0))
        for p in payloads:
            s.sendto(p, ("127.0.0.1", port))
        s.sendto(big, ("127.0.0.1", port))
    got, lens, srcs = [], [], []

    def all_in() -> bool:
        k = rx.recv()
        ls = rx.lengths(k)
        for i in range(k):
            lens.append(ls[i])
            got.append(bytes(rx.buf[i * SLOT:i * SLOT + max(0, ls[i])]))
        srcs.extend(rx.sources(k))
        return len(lens) >= 41
    wait_until(all_in, 5, interval=0, fail=False)  # the asserts below say what is missing
    sock.close()
    assert got[:40] == payloads
    assert lens[40] == -1  # too big for a slot: reported, not silently cut
    assert set(srcs) == {A("127.0.0.3")}


def test_dual_stack_socket_reports_ipv4_sources_as_4_bytes():
    sock, _ = open_socket("::", 0, 1 << 20)
    port = sock.getsockname()[1]
    rx = Receiver(sock, 8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as b:
        a.sendto(b"four", ("127.0.0.1", port))
        b.sendto(b"sixteen", ("::1", port))
    got = []

    def both_in() -> bool:
        k = rx.recv()
        got.extend(zip(rx.lengths(k), rx.sources(k)))
        return len(got) >= 2
    wait_until(both_in, 5, interval=0, fail=False)  # the assert below says what is missing
    sock.close()
    assert sorted(got) == [(4, A("127.0.0.1")), (7, socket.inet_pton(socket.AF_INET6, "::1"))]


def test_kernel_drop_counter_is_read():
    sock, _ = open_socket("127.0.0.1", 0, 4096)
    port = sock.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(500):
            s.sendto(b"x" * 1000, ("127.0.0.1", port))
    drops = socket_drops(socket_inode(sock))
    sock.close()
    assert drops is not None and drops > 0


# -- enrichment files ------------------------------------------------------------------------

def test_mapping_file_formats(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("vnis:\n  7: {interface_id: eni-7, account_id: '0123'}\n")
    b = tmp_path / "b.json"
    b.write_text(json.dumps([{"vni": 8, "instance_id": "i-8", "region": "r"}]))
    c = tmp_path / "c.yaml"
    c.write_text("9: {vpc_id: vpc-9}\n")
    assert load_mapping_file(a) == {7: VniInfo(interface_id="eni-7", account_id="0123")}
    assert load_mapping_file(b) == {8: VniInfo(instance_id="i-8", region="r")}
    assert load_mapping_file(c) == {9: VniInfo(vpc_id="vpc-9")}
    e = Enricher(load_mapping_file(a))
    assert json.loads(e.header_for({7, 8, None})) == {"7": {"interface_id": "eni-7",
                                                            "account_id": "0123"}}
    assert e.header_for({8}) is None


# -- processes --------------------------------------------------------------------------------

def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_worker_is_restarted_and_its_counts_kept(tmp_path):
    port = udp_port()
    c = Collector(["--transport", "null", "--listen", "127.0.0.1", "--port", str(port),
                   "--processes", "2", "--health-port", "0", "--metrics-port", "0",
                   "--source-cidr", "127.0.0.1/32"],
                  tmp_path, env={"MIRRORSCOPE_STATS_INTERVAL_S": "0.2"}).start()
    try:
        c.wait_ready(workers=2)
        first = tcp_flows(200, seed=1)
        send(first, "127.0.0.1", port)
        wait_until(lambda: metric_value(c.metrics(), M + "records_published_total") >= len(first),
                   20, interval=0.2, what="the first flows published", details=c.tail)
        victim = c.events("receiving")[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: metric_value(c.metrics(), M + "worker_restarts_total") >= 1
                   and len(c.events("receiving")) >= 3,
                   20, interval=0.2, what="the killed worker replaced", details=c.tail)
        code, _ = c.health()
        assert code == 200
        second = tcp_flows(200, seed=2, client_net="10.2.0.0")
        send(second, "127.0.0.1", port)
        wait_until(lambda: metric_value(c.metrics(), M + "records_published_total")
                   >= len(first) + len(second),
                   20, interval=0.2, what="the second flows published", details=c.tail)
    finally:
        s = c.stop()
    t = s["totals"]
    assert s["reconciled"], s["problems"]
    assert t["published"] == t["received"] == len(first) + len(second)
    assert sum(w["restarts"] for w in s["workers"]) == 1


def test_unreachable_kafka_keeps_the_collector_up_but_unhealthy(tmp_path):
    """No broker: the workers keep retrying (never crash, never bind), the health check says
    503 so the NLB sends nothing, and SIGTERM still ends it cleanly."""
    dead = udp_port()  # nothing listens on this TCP port either (almost surely)
    c = Collector(["--transport", "kafka", "--kafka-bootstrap", f"127.0.0.1:{dead}",
                   "--listen", "127.0.0.1", "--port", str(udp_port()), "--health-port", "0",
                   "--metrics-port", "0", "--source-cidr", "127.0.0.1/32"], tmp_path,
                  env={"MIRRORSCOPE_KAFKA_METADATA_TIMEOUT_S": "1"}).start()
    try:
        def retrying() -> bool:
            assert c.proc.poll() is None, c.tail()
            return c.port_of("health") is not None and bool(c.events("destination not ready; retrying"))
        wait_until(retrying, 30, interval=0.2, what="the collector retrying the broker",
                   details=c.tail)
        code, body = c.health()
        assert code == 503 and json.loads(body)["status"] == "unavailable"
    finally:
        s = c.stop()
    assert c.proc.returncode == 0 and s["reconciled"]
