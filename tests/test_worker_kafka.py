"""`mirrorscope worker` on a real Kafka broker and a real Redis (issue 5, and issue 6's
distributed must-show): a capture replayed by `mirrorscope collect` into a 4-partition topic
and processed by workers gives the same flow, HTTP and alert records, by id and content, as
`mirrorscope analyze` on the same capture, through scaling, SIGKILL and a Redis restart.

The capture is synthetic mirror traffic (tests/services/traffic.py): 300 HTTP conversations
interleaved over about 2 minutes of capture time (so long flows hit the 60 s active timeout),
20 DNS lookups over UDP and an nmap-like SYN scan of 120 ports of the mirrored server. It is cut into three files; each
step of a test replays one, and only the last replay ends with the end-of-capture marker.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid

import msgspec
import pytest

from schemas.kinds import BY_NAME, KINDS, NAMES
from tests.services.kafka_service import consume_all, create_topic
from tests.services.collector_proc import MIRRORSCOPE
from tests.services.fixtures import kafka_broker  # noqa: F401
from tests.services.traffic import (
    Datagram, capture_of, dns_lookups, ether, ipv4, tcp, tcp_flows, vxlan, write_pcap)
from tests.services.worker_proc import Worker
from tests.waiting import wait_until

PARTS = 3
STEP_NS = 30_000_000  # 30 ms between packets: ~2 min of capture time
T0 = 1_700_000_000_000_000_000
SCANNER = "10.66.0.7"


def scan(vni: int = 1234, server: str = "10.0.0.5", ports=range(1, 121)) -> list[Datagram]:
    """SYN probes to many ports; the server answers each with RST-ACK (closed) or SYN-ACK."""
    src, dst = socket.inet_aton(SCANNER), socket.inet_aton(server)
    out = []
    for i, port in enumerate(ports):
        sp = 40000 + i
        syn = ipv4(src, dst, 6, tcp(sp, port, 1000, 0, 0x02))
        out.append(Datagram(vxlan(vni, ether(syn)), 50000 + i, vni, -1, True))
        if port in (22, 80):
            answer = ipv4(dst, src, 6, tcp(port, sp, 5000, 1001, 0x12))
            rst = ipv4(src, dst, 6, tcp(sp, port, 1001, 0, 0x04))
            out.append(Datagram(vxlan(vni, ether(answer)), 51000 + i, vni, -1, False))
            out.append(Datagram(vxlan(vni, ether(rst)), 50000 + i, vni, -1, True))
        else:
            rst = ipv4(dst, src, 6, tcp(port, sp, 0, 1001, 0x14))
            out.append(Datagram(vxlan(vni, ether(rst)), 51000 + i, vni, -1, False))
    return out


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """(parts, reference): the three capture files and what `analyze` makes of them."""
    d = tmp_path_factory.mktemp("worker-capture")
    grams = tcp_flows(300, seed=11)
    probes = scan()
    # The scan runs in the middle of the HTTP traffic (inside part 2).
    mid = len(grams) // 2
    grams = grams[:mid] + probes + grams[mid:]
    # DNS lookups in part 1: their flows today, and their DNS records once the DNS analyzer is
    # registered (issue 19): the equality below compares every result kind by id.
    q = len(grams) // 6
    grams = grams[:q] + dns_lookups(20) + grams[q:]
    frames = capture_of(grams)
    n = len(frames)
    cuts = [0, n // 3, 2 * n // 3, n]
    parts = []
    for i in range(PARTS):
        p = d / f"part{i + 1}.pcap"
        write_pcap(p, frames[cuts[i]:cuts[i + 1]], ts_start_ns=T0 + cuts[i] * STEP_NS,
                   step_ns=STEP_NS)
        parts.append(p)
    ref = d / "reference"
    subprocess.run([MIRRORSCOPE, "analyze", *map(str, parts), "--out", str(ref), "--json"],
                   check=True, capture_output=True, timeout=120)

    def load(name):
        rows = [json.loads(line) for line in (ref / name).read_text().splitlines()]
        return rows

    # every result kind (schemas.kinds), by id
    ref = {k.name: {r[k.id_field]: r for r in load(f"{k.name}.jsonl")} for k in KINDS}
    flows, http, alerts = ref["flows"], ref["http"], ref["alerts"]
    assert len(http) == 300 and len(flows) > 320
    assert sum(1 for f in flows.values() if f["protocol"] == 17 and f["dstport"] == 53) == 20
    assert any(f["end_reason"] == "active" for f in flows.values())
    assert [a["type"] for a in alerts.values()] == ["port_scan"]
    return parts, ref


@pytest.fixture(params=[1, 2], ids=["1-process", "2-processes"])
def env(request, kafka_broker, redis_db, tmp_path):  # noqa: F811
    """Fresh topics and group for one test; the workers it starts are stopped at the end.
    Every test runs with workers of one process, and of two (--processes 2: the core in
    subprocesses, stream_app/runtime/processes.py)."""
    tag = uuid.uuid4().hex[:8]
    e = Env(kafka_broker.bootstrap, redis_db, tag, tmp_path, request.param)
    create_topic(e.bootstrap, e.topic, 4)
    for t in e.results.values():
        create_topic(e.bootstrap, t, 2)
    yield e
    for w in e.workers:
        try:
            w.stop(timeout=30)
        except Exception:
            w.kill()


class Env:
    def __init__(self, bootstrap, redis_url, tag, tmp, processes: int = 1):
        self.processes = processes
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.topic = f"packets-{tag}"
        self.group = f"workers-{tag}"
        self.results = {k: f"{k}-{tag}" for k in NAMES}
        self.tmp = tmp
        self.workers: list[Worker] = []

    def worker(self, name: str, *extra: str) -> Worker:
        w = Worker(name, self.tmp, self.bootstrap, self.redis_url, self.topic, self.group,
                   self.results, ["--processes", str(self.processes), *extra])
        self.workers.append(w)
        return w.start()

    def two_workers(self) -> tuple[Worker, Worker]:
        """w1 and w2, once each owns two of the four partitions."""
        w1, w2 = self.worker("w1"), self.worker("w2")
        w1.wait_ready(), w2.wait_ready()
        wait_for(lambda: owns(w1, 2) and owns(w2, 2), "2 partitions each", workers=self.workers)
        return w1, w2

    def replay(self, *paths, end_marker: bool) -> dict:
        # Payload on every port, as `analyze` reads it: the collector's default keeps it on
        # the HTTP ports only, and DNS (UDP 53) is recognised by its content.
        cfg = self.tmp / "collect-all-payload.yaml"
        cfg.write_text("payload:\n  all_ports: true\n")
        args = [MIRRORSCOPE, "collect", "--config", str(cfg), "--transport", "kafka",
                "--kafka-bootstrap", self.bootstrap, "--kafka-topic", self.topic,
                "--log-level", "warning"]
        for p in paths:
            args += ["--pcap", str(p)]
        if not end_marker:
            args.append("--no-end-marker")
        r = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        out = json.loads(r.stdout)
        assert out["reconciled"], out
        return out["totals"]

    def end_offsets(self) -> dict[int, int]:
        from kafka import KafkaConsumer, TopicPartition
        c = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            tps = [TopicPartition(self.topic, p) for p in range(4)]
            return {tp.partition: o for tp, o in c.end_offsets(tps).items()}
        finally:
            c.close()

    def committed(self) -> dict[int, int]:
        from kafka import KafkaAdminClient
        a = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            got = a.list_group_offsets(self.group).get(self.group, {})
            return {tp.partition: om.offset for tp, om in got.items() if tp.topic == self.topic}
        finally:
            a.close()

    def wait_committed(self, timeout: float = 90.0) -> None:
        """Until the group has committed every batch: processed and checkpointed."""
        end = self.end_offsets()

        def committed():
            try:
                c = self.committed()
            except Exception:
                c = {}
            return all(c.get(p, -1) >= o for p, o in end.items())
        wait_until(committed, timeout, interval=0.3, what=f"the group to commit {end}",
                   details=lambda: "\n".join(w.tail(10) for w in self.workers))

    def results_of(self, kind: str, want: set, timeout: float = 120.0) -> dict:
        """Records of one result topic by id (duplicates of a replay must be identical),
        once every wanted id is there or the time is up."""
        typ = BY_NAME[kind].struct_type
        dec = msgspec.msgpack.Decoder(typ)
        got: dict[str, dict] = {}

        def all_there() -> bool:
            got.clear()
            for m in consume_all(self.bootstrap, self.results[kind], timeout=20, idle=1.0):
                rec = msgspec.to_builtins(dec.decode(m.value))
                rid = m.key.decode()
                prev = got.setdefault(rid, rec)
                assert prev == rec, f"{kind} {rid} published twice with different content"
            return set(got) >= want
        wait_until(all_there, timeout, interval=1.0, fail=False)  # the caller compares
        return got


def wait_for(cond, what: str, timeout: float = 60.0, workers=()):
    wait_until(cond, timeout, interval=0.2, what=what,
               details=lambda: "\n".join(w.tail(10) for w in workers))


def assert_same(env: Env, ref: dict, kinds=("flows", "http")) -> None:
    for kind in kinds:
        want = ref[kind]
        got = env.results_of(kind, set(want))
        missing, extra = set(want) - set(got), set(got) - set(want)
        assert not missing and not extra, (kind, len(missing), len(extra))
        for rid, rec in want.items():
            if kind == "alerts":
                # An alert's ts is the time of the record that crossed the threshold: which
                # one that is depends on how the partitions' records interleave.
                rec, g = dict(rec), dict(got[rid])
                assert abs(rec.pop("ts") - g.pop("ts")) <= rec["window_end"] - rec["window_start"]
                assert g == rec, (kind, rid)
            else:
                assert got[rid] == rec, (kind, rid)


def owns(w: Worker, n: int) -> bool:
    r = w.ready()
    return r is not None and len(r["assigned"]) == n


def test_two_workers_give_the_same_records_as_analyze(env, capture):
    parts, ref = capture
    w1, w2 = env.two_workers()
    first = env.replay(parts[0], end_marker=False)
    env.wait_committed()
    # Garbage on the packet topic, mid-stream (not a PacketBatch): counted and dropped, never
    # fatal, and the batches after it are applied in order.
    from kafka import KafkaProducer
    prod = KafkaProducer(bootstrap_servers=env.bootstrap)
    for p in range(4):
        prod.send(env.topic, key=b"x", value=b"\xc1 not msgpack", partition=p)
    prod.flush()
    prod.close()
    sent = env.replay(parts[1], parts[2], end_marker=True)
    sent["published"] += first["published"]
    assert_same(env, ref, kinds=NAMES)
    # Both did a share of the work, and between them applied every packet once.
    s1, s2 = w1.stats(), w2.stats()
    assert s1["packet_records"] > 0 and s2["packet_records"] > 0
    assert s1["packet_records"] + s2["packet_records"] == sent["published"]
    assert s1.get("batches_undecodable", 0) + s2.get("batches_undecodable", 0) == 4
    assert not s1.get("offsets_lost") and not s2.get("offsets_lost")
    # /metrics says the same as the counters, and shows the lag, flows held and partitions.
    m = w1.metrics()
    assert m["mirrorscope_worker_packet_records_total"] == w1.stats()["packet_records"]
    assert m["mirrorscope_worker_partitions_owned"] == 2
    assert m["mirrorscope_worker_flows_held"] == 0  # every flow ended with the marker
    assert m["mirrorscope_worker_redis_round_trips_total"] > 0
    assert any(k.startswith("mirrorscope_worker_consumer_lag{") for k in m)
    alert = next(iter(ref["alerts"].values()))
    assert alert["source"] == SCANNER and alert["targets"] == ["10.0.0.5"]


def test_adding_and_removing_a_worker_mid_stream_changes_no_result(env, capture):
    parts, ref = capture
    w1 = env.worker("w1")
    w1.wait_ready()
    wait_for(lambda: owns(w1, 4), "w1 owning all 4 partitions", workers=env.workers)
    env.replay(parts[0], end_marker=False)
    env.wait_committed()
    assert len(w1.ready()["loaded"]) == 4

    w2 = env.worker("w2")  # scale out: the flows open in part 1 move with their partitions
    w2.wait_ready()
    wait_for(lambda: owns(w1, 2) and owns(w2, 2), "2 partitions each", workers=env.workers)
    env.replay(parts[1], end_marker=False)
    env.wait_committed()
    s2 = w2.stats()
    assert s2["partitions_loaded"] == 2 and s2["flows_restored"] > 0 and s2["packet_records"] > 0

    assert w2.stop() == 0  # scale in: SIGTERM hands its partitions back, checkpointed
    wait_for(lambda: owns(w1, 4), "w1 owning all 4 again", workers=env.workers)
    env.replay(parts[2], end_marker=True)
    assert_same(env, ref)


def test_sigkill_mid_capture_loses_nothing_and_counts_nothing_twice(env, capture):
    parts, ref = capture
    w1, w2 = env.two_workers()
    env.replay(parts[0], end_marker=False)
    env.wait_committed()
    before = w1.stats()["packet_records"]
    # Part 2 goes in from another process while w1 is at work on it; kill w1 mid-stream.
    collector = subprocess.Popen(
        [MIRRORSCOPE, "collect", "--transport", "kafka", "--kafka-bootstrap", env.bootstrap,
         "--kafka-topic", env.topic, "--pcap", str(parts[1]), "--no-end-marker",
         "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: w1.stats().get("packet_records", 0) > before, "w1 working on part 2",
             workers=env.workers)
    w1.kill()
    assert collector.wait(120) == 0
    w1b = env.worker("w1-restarted")
    w1b.wait_ready()
    wait_for(lambda: owns(w1b, 2) and owns(w2, 2), "2 partitions each again", timeout=90,
             workers=env.workers)
    env.replay(parts[2], end_marker=True)
    assert_same(env, ref)
    # The successor started from w1's last snapshot, not from scratch.
    restored = sum(w.stats().get("flows_restored", 0) for w in (w1b, w2))
    assert restored > 0


def test_redis_restart_while_workers_run(env, capture, redis_server):
    if not redis_server.controllable:
        pytest.skip("needs the local Redis launcher (an external Redis cannot be restarted)")
    parts, ref = capture
    w1, w2 = env.two_workers()
    env.replay(parts[0], end_marker=False)
    env.wait_committed()
    redis_server.stop()  # nothing is persisted: it comes back empty
    time.sleep(1.0)
    redis_server.start()
    env.replay(parts[1], end_marker=False)
    env.wait_committed()
    env.replay(parts[2], end_marker=True)
    assert_same(env, ref)
    # They noticed the store had lost their state and wrote all of it again.
    rewrites = sum(w.stats().get("state_rewrites", 0) for w in (w1, w2))
    assert rewrites > 0
