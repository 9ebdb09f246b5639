"""`mirrorscope collect` with a real Apache Kafka broker (KRaft, single node; see
tests/services/kafka_service.py): capture replay, live multi-process collection over UDP,
the partitioner against Kafka's own Java code, and a broker outage."""

from __future__ import annotations

import collections
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import msgspec
import pytest

from collectors.capture import open_capture
from collectors.decode import Decoder, PayloadPolicy
from collectors.flowkey import flow_key, partition_key
from collectors.partition import kafka_partition, murmur2
from collectors.source import capture_batches
from schemas.records import PACKET_BATCH_VERSION, PacketBatch, PacketRecord
from tests.services.collector_proc import Collector, metric_value
from tests.services.fixtures import controllable_kafka, kafka_broker, kafka_topic  # noqa: F401
from tests.services.kafka_service import consume_all, jar_dir
from tests.services.traffic import capture_of, send, tcp_flows, write_pcap
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "docs" / "samples" / "mirror-lab-http.pcap"
PARTITIONS = 12
DEC = msgspec.msgpack.Decoder(PacketBatch)
pytestmark = pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")
M = "mirrorscope_collector_"
A_LOCAL = socket.inet_aton("127.0.0.1")


def read_topic(bootstrap: str, topic: str, expect_records: int | None = None,
               timeout: float = 30.0):
    """(partition, key, PacketBatch, headers) of every message; duplicates (same collector
    and seq, which an idempotent producer should never write) fail the test."""
    deadline = time.monotonic() + timeout
    out: list = []

    def enough() -> bool:
        msgs = consume_all(bootstrap, topic, timeout=max(1.0, deadline - time.monotonic()))
        out[:] = [(m.partition, m.key, DEC.decode(m.value), dict(m.headers or [])) for m in msgs]
        return expect_records is None or sum(len(b.records) for _, _, b, _ in out) >= expect_records
    wait_until(enough, timeout, interval=0.3, fail=False)  # the caller asserts on what came
    ids = [(b.collector, b.seq) for _, _, b, _ in out]
    assert len(ids) == len(set(ids)), "a batch was written twice"
    return out


def split_markers(messages, partitions: int) -> list:
    """A replay ends with one end-of-capture marker per partition, after all its data, holding
    the capture's last packet time: check that, and return the data messages."""
    data = [m for m in messages if not m[2].end_ns]
    last = {}
    for part, _, b, _ in messages:
        last[part] = b
    assert len(last) == partitions
    end = max(r.ts_ns for _, _, b, _ in data for r in b.records)
    assert all(b.end_ns == end and not b.records for b in last.values())
    assert len(messages) - len(data) == partitions
    return data


def check_partitioning(messages, partitions: int) -> dict:
    """Every batch is in the partition Kafka's partitioner gives its key; every record of a
    batch belongs there too; every flow lives in one partition. Returns flow -> records."""
    flows: dict[tuple, list[tuple[int, PacketRecord, str]]] = collections.defaultdict(list)
    for part, key, batch, _ in messages:
        assert batch.version == PACKET_BATCH_VERSION
        assert key == batch.partition_key
        assert part == kafka_partition(key, partitions)
        assert key == partition_key(flow_key(batch.records[0])[0])
        for r in batch.records:
            fk = flow_key(r)[0]
            assert kafka_partition(partition_key(fk), partitions) == part
            flows[fk].append((part, r, batch.collector))
    for fk, recs in flows.items():
        assert len({p for p, _, _ in recs}) == 1, f"flow {fk} spans partitions"
    return flows


def reference_records(paths, payload: PayloadPolicy) -> list[bytes]:
    dec = Decoder(payload=payload)
    out = []
    for p in paths:
        for batch in capture_batches(open_capture(p), dec):
            out.extend(msgspec.msgpack.encode(r) for r in batch)
    return out


def test_replay_capture_into_kafka(kafka_broker, kafka_topic, tmp_path):  # noqa: F811
    """A capture replayed with --pcap arrives whole: every record, both directions of every
    flow in the one partition its key maps to, counts reconciled exactly."""
    topic = kafka_topic(PARTITIONS)
    datagrams = tcp_flows(400, seed=11)
    syn = tmp_path / "flows.pcap"
    write_pcap(syn, capture_of(datagrams))
    vni_map = tmp_path / "vnis.yaml"
    vni_map.write_text("vnis:\n  1234: {session_id: tms-1, interface_id: eni-1, vpc_id: vpc-1}\n")
    c = Collector(["--pcap", str(syn), "--pcap", str(SAMPLE), "--kafka-bootstrap",
                   kafka_broker.bootstrap, "--kafka-topic", topic, "--batch-records", "150",
                   "--vni-map", str(vni_map)],
                  tmp_path).start()
    s = c.wait(timeout=120)
    t = s["totals"]
    assert s["reconciled"], s["problems"]
    assert t["received"] == len(datagrams) + 56
    assert t["published"] == t["received"] and sum(t["drops"].values()) == 0
    assert sum(t["publish_dropped"].values()) == 0 and t["queued_records"] == 0

    msgs = read_topic(kafka_broker.bootstrap, topic, t["published"])
    assert t["batches_published"] == len(msgs)
    msgs = split_markers(msgs, PARTITIONS)
    flows = check_partitioning(msgs, PARTITIONS)
    assert sum(len(b.records) for _, _, b, _ in msgs) == t["published"]
    # VNI enrichment rides along as a header (every batch here is VNI 1234).
    for _, _, b, headers in msgs:
        info = json.loads(headers["mirrorscope.vni"])
        assert info == {"1234": {"session_id": "tms-1", "interface_id": "eni-1", "vpc_id": "vpc-1"}}
    # Both directions of every synthetic flow, in one partition.
    server = socket.inet_aton("10.0.0.5")
    syn_flows = [recs for fk, recs in flows.items() if server in (fk[2], fk[4])]
    assert len(syn_flows) == 400
    for recs in syn_flows:
        assert {r.direction for _, r, _ in recs} == {"ingress", "egress"}
    # Byte for byte the records the reference decoder makes (same payload policy).
    from collectors.config import DEFAULT_PAYLOAD_PORTS
    ref = reference_records([syn, SAMPLE], PayloadPolicy(max_bytes=9001,
                                                         ports=frozenset(DEFAULT_PAYLOAD_PORTS)))
    got = [msgspec.msgpack.encode(r) for _, _, b, _ in msgs for r in b.records]
    assert collections.Counter(got) == collections.Counter(ref)
    # Per-flow order is kept: within a partition, records of a flow are in capture order.
    for recs in flows.values():
        ts = [r.ts_ns for _, r, _ in recs]
        assert ts == sorted(ts)


def test_live_processes_share_the_port(kafka_broker, kafka_topic, tmp_path):  # noqa: F811
    """Two worker processes on one UDP port (SO_REUSEPORT): datagrams from many source ports
    spread over both, yet both directions of each flow meet in one partition, and received =
    published + counted drops, with the drops' reasons right."""
    topic = kafka_topic(PARTITIONS)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = Collector(["--listen", "127.0.0.1", "--port", str(port), "--processes", "2",
                   "--source-cidr", "127.0.0.1/32", "--vni", "1234", "--vni", "77",
                   "--kafka-bootstrap", kafka_broker.bootstrap, "--kafka-topic", topic,
                   "--health-port", "0", "--metrics-port", "0", "--linger-ms", "20"],
                  tmp_path)
    c.start()
    try:
        c.wait_ready(workers=2)
        good = tcp_flows(1500, seed=5) + tcp_flows(100, vni=77, seed=6, client_net="10.9.0.0")
        sent = send(good, "127.0.0.1", port, sockets=16, pace_every=2000, pace_s=0.01)
        # Refused: an unlisted VNI, a bad VXLAN header, a foreign source address.
        wrong_vni = tcp_flows(20, vni=999, seed=8)
        sent_bad = send(wrong_vni, "127.0.0.1", port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(30):
                s.sendto(b"\x00" * 8 + good[0].payload[8:], ("127.0.0.1", port))
            s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s2.bind(("127.0.0.2", 0))
            for d in good[:40]:
                s2.sendto(d.payload, ("127.0.0.1", port))
            s2.close()
        total = sent + sent_bad + 30 + 40
        def counted() -> bool:
            m = c.metrics()
            return metric_value(m, M + "datagrams_received_total") >= total and \
                metric_value(m, M + "records_published_total") >= sent
        wait_until(counted, 30, interval=0.3, fail=False)  # the asserts below say what is short
        m = c.metrics()
        per_worker = [metric_value(m, M + "datagrams_received_total", worker=w) for w in "01"]
        assert min(per_worker) > 0, per_worker  # both processes received
        assert metric_value(m, M + "kernel_socket_drops_total") == 0
        assert metric_value(m, M + "worker_up") == 2
        code, body = c.health()
        assert code == 200 and '"receiving": true' in body
    finally:
        s = c.stop()
    t = s["totals"]
    assert s["reconciled"], s["problems"]
    assert t["received"] == total
    assert t["drops"]["vni_not_allowed"] == len(wrong_vni)
    assert t["drops"]["bad_vxlan"] == 30
    assert t["drops"]["source_not_allowed"] == 40
    assert t["published"] == sent and t["decoded"] == sent
    assert t["kernel_drops"] == 0

    msgs = read_topic(kafka_broker.bootstrap, topic, sent)
    assert sum(len(b.records) for _, _, b, _ in msgs) == sent
    flows = check_partitioning(msgs, PARTITIONS)
    assert len(flows) == 1600
    # The same records the reference decoder makes of those datagrams (but the receive time).
    from collectors.config import DEFAULT_PAYLOAD_PORTS
    dec = Decoder(payload=PayloadPolicy(max_bytes=9001, ports=frozenset(DEFAULT_PAYLOAD_PORTS)))
    ref = collections.Counter(msgspec.msgpack.encode(dec.decode_vxlan(d.payload, A_LOCAL, 0))
                              for d in good)
    got = collections.Counter()
    for _, _, b, _ in msgs:
        for r in b.records:
            assert r.ts_ns > 0
            got[msgspec.msgpack.encode(msgspec.structs.replace(r, ts_ns=0))] += 1
    assert got == ref
    split = 0
    for recs in flows.values():
        # (The outer source here is 127.0.0.1, not the server, so direction is unknown: tell
        # the two directions apart by the server's port.)
        fwd = {col for _, r, col in recs if r.dport == 80}
        rev = {col for _, r, col in recs if r.sport == 80}
        assert fwd and rev
        split += fwd != rev
    # The two directions of many flows were received by different processes, and still met.
    assert split > 100, split
    assert len({b.collector for _, _, b, _ in msgs}) == 2


def test_partitioner_is_kafkas(tmp_path):
    """Our partition choice equals Kafka's Java client's (Utils.murmur2 + toPositive %
    partitions, run from the broker's own kafka-clients jar) and kafka-python's murmur2."""
    from kafka.partitioner.default import murmur2 as kp_murmur2

    javac = shutil.which("javac")
    assert javac, "javac is required (Debian: openjdk-17-jdk-headless)"
    jars = sorted(jar_dir().glob("kafka-clients-*.jar"))
    assert jars, f"kafka-clients jar missing in {jar_dir()}: run .ci/setup.sh"
    src = tmp_path / "Part.java"
    src.write_text("""
import org.apache.kafka.common.utils.Utils;
import java.io.*;
public class Part {
  public static void main(String[] a) throws Exception {
    BufferedReader r = new BufferedReader(new InputStreamReader(System.in));
    String line;
    while ((line = r.readLine()) != null) {
      String[] f = line.split(" ");
      byte[] k = new byte[f[0].length() / 2];
      for (int i = 0; i < k.length; i++) k[i] = (byte) Integer.parseInt(f[0].substring(2*i, 2*i+2), 16);
      int n = Integer.parseInt(f[1]);
      System.out.println(Utils.murmur2(k) + " " + (Utils.toPositive(Utils.murmur2(k)) % n));
    }
  }
}
""")
    subprocess.run([javac, "-cp", str(jars[0]), "-d", str(tmp_path), str(src)], check=True,
                   timeout=120)
    import random
    rnd = random.Random(3)
    keys = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 60))) for _ in range(1500)]
    keys += [partition_key(flow_key(d_rec)[0]) for d_rec in _records_of(tcp_flows(200))]
    counts = [rnd.choice([1, 3, 12, 64, 100]) for _ in keys]
    inp = "".join(f"{k.hex()} {n}\n" for k, n in zip(keys, counts))
    out = subprocess.run(["java", "-cp", f"{jar_dir()}/*:{tmp_path}", "Part"], input=inp,
                         capture_output=True, text=True, check=True, timeout=120).stdout.split("\n")
    for k, n, line in zip(keys, counts, out):
        jh, jp = (int(x) for x in line.split())
        assert murmur2(k) == jh & 0xFFFFFFFF
        assert kp_murmur2(k) & 0xFFFFFFFF == jh & 0xFFFFFFFF
        assert kafka_partition(k, n) == jp


def _records_of(datagrams):
    dec = Decoder(payload=PayloadPolicy())
    return [dec.decode_vxlan(d.payload, b"\x0a\x00\x00\x05", 0) for d in datagrams]


def test_broker_outage_loses_only_what_exceeds_the_buffer(controllable_kafka, kafka_topic,  # noqa: F811
                                                           tmp_path):
    """Kafka stops for a while: the collector keeps draining its socket, keeps up to
    --buffer-bytes of batches for the broker, drops (counted, logged) what exceeds it, and
    delivers the buffered batches and everything after once the broker is back."""
    broker = controllable_kafka
    topic = kafka_topic(6, broker=broker)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    buffer_bytes = 1_500_000
    c = Collector(["--listen", "127.0.0.1", "--port", str(port), "--processes", "1",
                   "--kafka-bootstrap", broker.bootstrap, "--kafka-topic", topic,
                   "--buffer-bytes", str(buffer_bytes), "--batch-records", "200",
                   "--linger-ms", "20", "--health-port", "0", "--metrics-port", "0",
                   "--source-cidr", "127.0.0.1/32"],
                  tmp_path, env={"MIRRORSCOPE_KAFKA_REQUEST_TIMEOUT_MS": "5000",
                                 "MIRRORSCOPE_KAFKA_RETRY_BACKOFF_MS": "200"})
    c.start()

    def wait_metric(name, target, timeout=60.0, **labels):
        def reached():
            v = metric_value(c.metrics(), M + name, **labels)
            return v if v >= target else 0.0
        return wait_until(reached, timeout, interval=0.2, what=f"{name} >= {target}", details=c.tail)

    try:
        c.wait_ready()
        before = tcp_flows(300, seed=21, client_net="10.21.0.0")
        during = tcp_flows(2500, seed=22, client_net="10.22.0.0", response_len=1000)
        after = tcp_flows(300, seed=23, client_net="10.23.0.0")
        send(before, "127.0.0.1", port)
        wait_metric("records_published_total", len(before))

        broker.stop()
        t_down = time.monotonic()
        send(during, "127.0.0.1", port, pace_every=1000, pace_s=0.02)
        wait_metric("datagrams_received_total", len(before) + len(during))
        m = c.metrics()
        dropped = metric_value(m, M + "records_publish_dropped_total", reason="buffer_full")
        queued_bytes = metric_value(m, M + "queue_bytes")
        assert dropped > 0, "the outage should have overflowed the buffer"
        assert queued_bytes <= buffer_bytes
        assert metric_value(m, M + "kernel_socket_drops_total") == 0
        assert metric_value(m, M + "records_published_total") == len(before)
        code, _ = c.health()
        assert code == 200  # still receiving: the NLB keeps sending

        time.sleep(max(0.0, 2.0 - (time.monotonic() - t_down)))  # a real outage, not a blip
        broker.start()
        # The buffered batches go out once the broker is back...
        wait_metric("records_published_total", len(before) + 1, timeout=90)
        # ...and so does new traffic.
        send(after, "127.0.0.1", port)
        target = len(before) + len(during) + len(after) - dropped
        wait_metric("records_published_total", target, timeout=90)
    finally:
        s = c.stop()
    t = s["totals"]
    assert s["reconciled"], s["problems"]
    assert t["received"] == len(before) + len(during) + len(after)
    lost = sum(t["publish_dropped"].values())
    assert lost == t["publish_dropped"]["buffer_full"] == dropped  # only the overflow
    assert t["published"] + lost == t["received"]
    assert t["queued_records"] == 0 and t["kernel_drops"] == 0
    assert any(e.get("reason") == "buffer_full" for e in c.events("records dropped: buffer_full"))

    msgs = read_topic(broker.bootstrap, topic, t["published"])
    got = sum(len(b.records) for _, _, b, _ in msgs)
    assert got == t["published"]
    check_partitioning(msgs, 6)
    by_net = collections.Counter()
    for _, _, b, _ in msgs:
        for r in b.records:
            cli = r.src if r.dport == 80 else r.dst
            by_net[cli[1]] += 1
    assert by_net[21] == len(before) and by_net[23] == len(after)
    print(f"outage: published {t['published']}, dropped {lost}, buffered-and-delivered "
          f"{by_net[22]} of {len(during)}")
    # What was buffered during the outage arrived: up to the buffer's worth, never more.
    assert 0 < by_net[22] < len(during)
