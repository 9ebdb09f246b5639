"""`mirrorscope kinesis-worker` on a real Kinesis API (moto's server) and a real Redis
(issue 5, the Kinesis path): the capture of tests/test_worker_kafka.py replayed by
`mirrorscope collect --transport kinesis` into a 4-shard stream and consumed by two workers
gives the same flow, HTTP and alert records, by id and content, as `mirrorscope analyze`;
so it does when one worker is SIGKILLed mid-stream and the other takes its shards over once
their leases expire, when workers join and leave (shards handed over at a checkpoint), and
when Redis restarts empty. Each worker writes its results to its own folder; a record made
twice (a replay after the kill) must be identical, and the merged folders equal analyze's
output. One test sends the results to Kafka result topics instead (a real broker).

Resharding, throttling and undecodable records are shown in process against a stand-in
client, because moto's SplitShard moves the parent's records into the children (the service
keeps them in the closed parent) and moto never throttles.

The collector replays with one PutRecords sender thread: moto's server is threaded and its
Kinesis backend is not safe for concurrent writes to one shard, and several senders may
store one shard's records out of order (see docs/distributed.md, "Kinesis", Limits).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import boto3
import msgspec
import pytest

from schemas.kinds import BY_NAME, NAMES
from tests.services.kafka_service import free_port
from tests.services.moto_service import CREDENTIALS
from tests.services.collector_proc import MIRRORSCOPE
from tests.services.fixtures import kafka_broker  # noqa: F401
from tests.services.worker_proc import Worker
from tests.test_worker_kafka import SCANNER, capture  # noqa: F401  (the module's capture fixture)
from tests.waiting import wait_until, wait_until_async

LEASE_MS = 3000
KINDS = NAMES
ID = {k: BY_NAME[k].id_field for k in KINDS}


class KinesisWorker(Worker):
    """`mirrorscope kinesis-worker` as a subprocess; /readyz, stats, SIGTERM/SIGKILL as for
    the Kafka worker (tests/services/worker_proc.py)."""

    def __init__(self, name: str, workdir: Path, endpoint: str, redis_url: str, stream: str,
                 app: str, extra: list[str] | None = None):
        self.name = name
        self.workdir = Path(workdir) / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.out = self.workdir / "out"
        self.args = [
            "kinesis-worker", "--stream", stream, "--endpoint-url", endpoint,
            "--region", "us-east-1", "--redis-url", redis_url, "--app-name", app,
            "--worker-id", name, "--lease-ms", str(LEASE_MS), "--shard-refresh", "2",
            "--poll-interval", "0.2", "--checkpoint-interval", "0.5",
            "--health-port", str(self.port), "--bind", "127.0.0.1", "--log-level", "debug",
            *(extra or []),
        ]
        if "--kafka-bootstrap" not in self.args:
            self.args += ["--out", str(self.out)]
        self.env = {**os.environ, **CREDENTIALS, "MIRRORSCOPE_STATE_KEY": "test-state-key"}
        self.proc = None

    def logs(self, msg: str) -> list[dict]:
        out = []
        for line in self.err.read_text(errors="replace").splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("msg") == msg:
                out.append(d)
        return out

    def results(self, kind: str) -> list[dict]:
        """Records of one kind; a last line torn by SIGKILL is not a record."""
        p = self.out / f"{kind}.jsonl"
        if not p.exists():
            return []
        lines = p.read_bytes().split(b"\n")
        assert lines[-1] == b"" or self.proc.returncode == -9, f"{p}: torn last line"
        return [json.loads(line) for line in lines[:-1]]


class Env:
    def __init__(self, endpoint: str, redis_url: str, tmp: Path):
        self.endpoint = endpoint
        self.redis_url = redis_url
        self.tmp = tmp
        tag = uuid.uuid4().hex[:8]
        self.stream = f"mirror-{tag}"
        self.app = f"kin-{tag}"
        self.client = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                                   aws_access_key_id="testing", aws_secret_access_key="testing")
        self.workers: list[KinesisWorker] = []

    def worker(self, name: str, *extra: str) -> KinesisWorker:
        w = KinesisWorker(name, self.tmp, self.endpoint, self.redis_url, self.stream, self.app,
                          list(extra))
        self.workers.append(w)
        return w.start()

    def collect_args(self, *paths, end_marker: bool) -> list[str]:
        args = [MIRRORSCOPE, "collect", "--transport", "kinesis", "--kinesis-stream",
                self.stream, "--kinesis-endpoint-url", self.endpoint, "--kinesis-region",
                "us-east-1", "--batch-records", "40", "--log-level", "warning"]
        for p in paths:
            args += ["--pcap", str(p)]
        if not end_marker:
            args.append("--no-end-marker")
        return args

    @property
    def collect_env(self) -> dict:
        return {**os.environ, **CREDENTIALS, "MIRRORSCOPE_KINESIS_SENDERS": "1"}

    def replay(self, *paths, end_marker: bool) -> dict:
        r = subprocess.run(self.collect_args(*paths, end_marker=end_marker),
                           capture_output=True, text=True, timeout=120, env=self.collect_env)
        assert r.returncode == 0, r.stderr[-2000:]
        out = json.loads(r.stdout)
        assert out["reconciled"], out
        return out["totals"]

    def last_sequence_numbers(self) -> dict[str, int]:
        out = {}
        for sh in self.client.list_shards(StreamName=self.stream)["Shards"]:
            it = self.client.get_shard_iterator(StreamName=self.stream, ShardId=sh["ShardId"],
                                                ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            recs = self.client.get_records(ShardIterator=it, Limit=10000)["Records"]
            out[sh["ShardId"]] = int(recs[-1]["SequenceNumber"]) if recs else -1
        return out

    def wait_checkpointed(self, timeout: float = 60.0) -> None:
        """Until every shard's state in Redis includes the shard's last record."""
        import redis

        from stream_app.state.partition import Meta
        from stream_app.state.store import keys
        want = self.last_sequence_numbers()
        r = redis.Redis.from_url(self.redis_url)
        got: dict = {}

        def checkpointed() -> bool:
            for sid in want:
                meta = r.get(keys(f"{self.app}:{self.stream}:{sid}")[1])
                got[sid] = (msgspec.msgpack.decode(meta, type=Meta).offset >> 16
                            if meta else -1)
            return all(got[s] >= n for s, n in want.items())
        try:
            wait_until(checkpointed, timeout, interval=0.2,
                       what=f"checkpoints at {want}", details=lambda: f"got {got}\n" + self.tails())
        finally:
            r.close()

    def tails(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.tail(15)}" for w in self.workers)

    def merged(self, kind: str) -> dict[str, dict]:
        got: dict[str, dict] = {}
        for w in self.workers:
            for rec in w.results(kind):
                rid = rec[ID[kind]]
                prev = got.setdefault(rid, rec)
                assert prev == rec, f"{kind} {rid} written twice with different content"
        return got

    def wait_results(self, ref: dict, timeout: float = 60.0) -> dict[str, dict]:
        got: dict[str, dict] = {}

        def all_there() -> bool:
            got.update({k: self.merged(k) for k in KINDS})
            return all(set(got[k]) >= set(ref[k]) for k in ref)
        wait_until(all_there, timeout, interval=0.5, fail=False)  # the caller compares
        return got


@pytest.fixture
def env(moto, redis_db, tmp_path):
    e = Env(moto.url, redis_db, tmp_path)
    e.client.create_stream(StreamName=e.stream, ShardCount=4)
    yield e
    for w in e.workers:
        try:
            w.stop(timeout=30)
        except Exception:
            w.kill()


def owns(w: KinesisWorker, n: int) -> bool:
    r = w.ready()
    return r is not None and len(r["assigned"]) == n


def wait_for(cond, what: str, env: Env, timeout: float = 30.0) -> None:
    wait_until(cond, timeout, interval=0.2, what=what, details=env.tails)


def assert_same(env: Env, ref: dict, kinds=KINDS) -> None:
    got = env.wait_results({k: ref[k] for k in kinds})
    for kind in kinds:
        want = ref[kind]
        missing, extra = set(want) - set(got[kind]), set(got[kind]) - set(want)
        assert not missing and not extra, (kind, len(missing), len(extra), env.tails())
        for rid, rec in want.items():
            g = got[kind][rid]
            if kind == "alerts":
                # The alert's ts is the time of the record that crossed the threshold: which
                # one that is depends on how the shards' records interleave.
                rec, g = dict(rec), dict(g)
                assert abs(rec.pop("ts") - g.pop("ts")) <= rec["window_end"] - rec["window_start"]
            assert g == rec, (kind, rid)


def test_two_kinesis_workers_give_the_same_records_as_analyze(env, capture):  # noqa: F811
    parts, ref = capture
    w1, w2 = env.worker("w1"), env.worker("w2")
    w1.wait_ready(), w2.wait_ready()
    wait_for(lambda: owns(w1, 2) and owns(w2, 2), "2 shards each", env)
    assert w1.ready()["live_workers"] == 2
    assert set(w1.ready()["assigned"]) | set(w2.ready()["assigned"]) == set(w1.ready()["shards"])
    sent = env.replay(*parts, end_marker=True)
    assert_same(env, ref)
    s1, s2 = w1.stats(), w2.stats()
    # Each did its share, and between them applied every packet exactly once.
    assert s1["packet_records"] > 0 and s2["packet_records"] > 0
    assert s1["packet_records"] + s2["packet_records"] == sent["published"]
    # (batches_published counts the 4 end-of-capture markers too)
    assert s1["batches_applied"] + s2["batches_applied"] == sent["batches_published"]
    assert s1.get("undecodable", 0) == s2.get("undecodable", 0) == 0
    assert next(iter(ref["alerts"].values()))["source"] == SCANNER
    # The leases are logged as they move.
    assert len(w1.logs("lease acquired")) >= 2 and len(w2.logs("lease acquired")) >= 2
    m = w1.metrics()
    assert m["mirrorscope_kinesis_shards_owned"] == 2 and m["mirrorscope_kinesis_live_workers"] == 2
    assert m["mirrorscope_worker_packet_records_total"] == s1["packet_records"]


def test_sigkill_the_survivor_takes_the_shards_over(env, capture):  # noqa: F811
    parts, ref = capture
    # w1 checkpoints only every 4 s: when it is killed, it has applied batches that no
    # snapshot holds yet, and w2 must apply them again, once.
    w1, w2 = env.worker("w1", "--checkpoint-interval", "4"), env.worker("w2")
    w1.wait_ready(), w2.wait_ready()
    wait_for(lambda: owns(w1, 2) and owns(w2, 2), "2 shards each", env)
    w1_shards = set(w1.ready()["assigned"])
    published = env.replay(parts[0], end_marker=False)["published"]
    env.wait_checkpointed()
    before = w1.stats()["packet_records"]
    # Part 2 goes in while w1 is at work on it; w1 dies mid-stream without a goodbye.
    collector = subprocess.Popen(env.collect_args(parts[1], end_marker=False),
                                 env=env.collect_env, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL)
    seen = {}

    def working() -> bool:
        seen.update(w1.stats())
        return seen.get("packet_records", 0) > before
    wait_until(working, 30, interval=0.05, what="worker 1 to process packets", details=env.tails)
    w1.kill()
    t_kill = time.monotonic()
    out, _ = collector.communicate(timeout=120)
    assert collector.returncode == 0
    published += json.loads(out)["totals"]["published"]
    wait_for(lambda: owns(w2, 4), "w2 taking all 4 shards", env, timeout=LEASE_MS / 1000 + 15)
    took = time.monotonic() - t_kill
    assert took >= LEASE_MS / 1000 * 0.5, "shards moved before w1's leases could expire"
    assert {e["shard"] for e in w2.logs("lease acquired")[2:]} == w1_shards
    published += env.replay(parts[2], end_marker=True)["published"]
    # Alerts are left out, as in tests/test_worker_kafka.py: the detectors' state in Redis is
    # not part of the partition snapshots, so an alert made by w1 after its last checkpoint
    # is not made again when w2 replays those batches (the threshold was crossed already).
    assert_same(env, ref, kinds=("flows", "http"))
    s2 = w2.stats()
    # w2 resumed w1's shards from their last snapshots, not from scratch ...
    assert s2["flows_restored"] > 0 and s2["leases_acquired"] == 4
    assert w2.ready()["live_workers"] == 1
    # ... and applied again what w1 had applied after them (which the results, equal to
    # analyze's, show was not counted twice).
    assert seen["packet_records"] + s2["packet_records"] > published


def test_scale_out_and_in_hand_shards_over_without_replay(env, capture):  # noqa: F811
    """A second worker joins: the first hands it half the shards at once (checkpointed, then
    released); it leaves with SIGTERM: its shards come back before any lease expires. No
    batch is applied twice, and every record (alerts too) is analyze's."""
    parts, ref = capture
    w1 = env.worker("w1")
    w1.wait_ready()
    wait_for(lambda: owns(w1, 4), "w1 owning all 4 shards", env)
    published = env.replay(parts[0], end_marker=False)["published"]
    env.wait_checkpointed()

    w2 = env.worker("w2")
    w2.wait_ready()
    wait_for(lambda: owns(w1, 2) and owns(w2, 2), "2 shards each", env)
    assert [e["reason"] for e in w1.logs("lease released")] == ["rebalance"] * 2
    published += env.replay(parts[1], end_marker=False)["published"]
    env.wait_checkpointed()
    s2 = w2.stats()
    assert s2["partitions_loaded"] == 2 and s2["flows_restored"] > 0 and s2["packet_records"] > 0

    t0 = time.monotonic()
    assert w2.stop() == 0  # SIGTERM: checkpoint, release, leave the registry
    wait_for(lambda: owns(w1, 4), "w1 owning all 4 again", env)
    assert time.monotonic() - t0 < LEASE_MS / 1000, "waited for the leases to expire"
    assert {e["reason"] for e in w2.logs("lease released")} == {"shutdown"}
    published += env.replay(parts[2], end_marker=True)["published"]
    assert_same(env, ref)
    s1 = w1.stats()
    assert s1["packet_records"] + s2["packet_records"] == published


def test_redis_restart_while_workers_run(env, capture, redis_server):  # noqa: F811
    """Redis comes back empty: the workers take their vanished leases again, write their
    whole state again, and go on from where they were."""
    if not redis_server.controllable:
        pytest.skip("needs the local Redis launcher (an external Redis cannot be restarted)")
    parts, ref = capture
    w1, w2 = env.worker("w1"), env.worker("w2")
    w1.wait_ready(), w2.wait_ready()
    wait_for(lambda: owns(w1, 2) and owns(w2, 2), "2 shards each", env)
    published = env.replay(parts[0], end_marker=False)["published"]
    env.wait_checkpointed()
    redis_server.stop()  # nothing is persisted: it comes back empty
    time.sleep(0.5)
    redis_server.start()
    published += env.replay(parts[1], end_marker=False)["published"]
    env.wait_checkpointed()
    published += env.replay(parts[2], end_marker=True)["published"]
    assert_same(env, ref, kinds=("flows", "http"))
    s1, s2 = w1.stats(), w2.stats()
    assert s1["state_rewrites"] + s2["state_rewrites"] == 4
    assert s1["leases_retaken"] + s2["leases_retaken"] == 4
    assert s1["packet_records"] + s2["packet_records"] == published  # nothing read twice


def test_results_to_kafka_topics(env, capture, kafka_broker):  # noqa: F811
    """--kafka-bootstrap: the records go to the result topics as `mirrorscope worker` sends
    them (key = id, value = msgpack), and equal analyze's."""
    from tests.services.kafka_service import consume_all, create_topic
    parts, ref = capture
    topics = {k: f"{k}-{env.stream}" for k in KINDS}
    for t in topics.values():
        create_topic(kafka_broker.bootstrap, t, 2)
    w = env.worker("w1", "--kafka-bootstrap", kafka_broker.bootstrap,
                   *[a for k in KINDS for a in (f"--topic-{k}", topics[k])])
    w.wait_ready()
    wait_for(lambda: owns(w, 4), "all 4 shards", env)
    env.replay(*parts, end_marker=True)
    env.wait_checkpointed()  # a snapshot comes after its records are acknowledged
    types = {k: BY_NAME[k].struct_type for k in KINDS}
    for kind in KINDS:
        dec = msgspec.msgpack.Decoder(types[kind])
        got = {}
        for m in consume_all(kafka_broker.bootstrap, topics[kind], timeout=20, idle=0.5):
            rec = msgspec.to_builtins(dec.decode(m.value))
            assert m.key.decode() == rec[ID[kind]]
            assert got.setdefault(m.key.decode(), rec) == rec
        assert set(got) == set(ref[kind]), kind
        for rid, rec in ref[kind].items():
            if kind == "alerts":
                rec, g = dict(rec), dict(got[rid])
                assert abs(rec.pop("ts") - g.pop("ts")) <= rec["window_end"] - rec["window_start"]
                assert g == rec
            else:
                assert got[rid] == rec, (kind, rid)


class StandInKinesis:
    """The Kinesis semantics moto lacks, in process: a split keeps the parent's records in
    the closed parent (moto moves them into the children and renumbers them), GetRecords at
    the end of a closed shard returns no NextShardIterator, and GetRecords can be made to
    throttle or to expire the iterator. PutRecords routes by ExplicitHashKey like the
    service, so the collector publishes into it unchanged."""

    def __init__(self, shards: int):
        self.lock = threading.Lock()
        self.seq = 1000
        self.shards: dict[str, dict] = {}
        step = (1 << 128) // shards
        for i in range(shards):
            hi = (1 << 128) - 1 if i == shards - 1 else (i + 1) * step - 1
            self._add(i * step, hi)
        self.reads: list[tuple[str, int]] = []  # (shard, records returned), in call order
        self.fail: list[str] = []  # error codes GetRecords raises next

    def _add(self, lo: int, hi: int, parent: str | None = None) -> str:
        sid = f"shardId-{len(self.shards):012d}"
        self.shards[sid] = {"lo": lo, "hi": hi, "parent": parent, "closed": None,
                            "start": self.seq, "records": []}
        return sid

    def list_shards(self, **kw):
        out = []
        with self.lock:
            for sid, sh in self.shards.items():
                rng = {"StartingSequenceNumber": str(sh["start"])}
                if sh["closed"] is not None:
                    rng["EndingSequenceNumber"] = str(sh["closed"])
                d = {"ShardId": sid, "SequenceNumberRange": rng,
                     "HashKeyRange": {"StartingHashKey": str(sh["lo"]),
                                      "EndingHashKey": str(sh["hi"])}}
                if sh["parent"]:
                    d["ParentShardId"] = sh["parent"]
                out.append(d)
        return {"Shards": out}

    def put(self, h: int, data: bytes, pk: str) -> tuple[str, str]:
        with self.lock:
            sid = next(s for s, sh in self.shards.items()
                       if sh["closed"] is None and sh["lo"] <= h <= sh["hi"])
            self.seq += 1
            self.shards[sid]["records"].append(
                {"SequenceNumber": str(self.seq), "Data": data, "PartitionKey": pk})
            return sid, str(self.seq)

    def put_records(self, StreamName, Records):
        from collectors.partition import kinesis_hash
        out = []
        for e in Records:
            h = int(e["ExplicitHashKey"]) if e.get("ExplicitHashKey") else kinesis_hash(
                e["PartitionKey"])
            sid, seq = self.put(h, e["Data"], e["PartitionKey"])
            out.append({"ShardId": sid, "SequenceNumber": seq})
        return {"FailedRecordCount": 0, "Records": out}

    def split(self, sid: str) -> list[str]:
        with self.lock:
            sh = self.shards[sid]
            self.seq += 1
            sh["closed"] = self.seq
            mid = (sh["lo"] + sh["hi"]) // 2
            return [self._add(sh["lo"], mid, sid), self._add(mid + 1, sh["hi"], sid)]

    def get_shard_iterator(self, StreamName, ShardId, ShardIteratorType,
                           StartingSequenceNumber=None):
        recs = self.shards[ShardId]["records"]
        if ShardIteratorType == "TRIM_HORIZON":
            pos = 0
        else:
            n = int(StartingSequenceNumber)
            after = ShardIteratorType == "AFTER_SEQUENCE_NUMBER"
            pos = next((i for i, r in enumerate(recs)
                        if int(r["SequenceNumber"]) > n or (not after and
                                                            int(r["SequenceNumber"]) == n)),
                       len(recs))
        return {"ShardIterator": f"{ShardId}|{pos}"}

    def get_records(self, ShardIterator, Limit):
        from botocore.exceptions import ClientError
        if self.fail:
            code = self.fail.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": "stand-in"}}, "GetRecords")
        sid, pos = ShardIterator.split("|")
        pos = int(pos)
        with self.lock:
            sh = self.shards[sid]
            recs = sh["records"][pos:pos + Limit]
            nxt = pos + len(recs)
            end = sh["closed"] is not None and nxt >= len(sh["records"])
            self.reads.append((sid, len(recs)))
        return {"Records": recs, "NextShardIterator": None if end else f"{sid}|{nxt}",
                "MillisBehindLatest": 0}


def _replay(client, paths, end_marker: bool) -> dict:
    """`mirrorscope collect --pcap` in process, into the stand-in (in a thread: replay()
    takes SIGTERM/SIGINT over when it runs in the main thread)."""
    from collectors.config import CollectConfig, KinesisConfig
    from collectors.worker import replay
    cfg = CollectConfig(transport="kinesis", kinesis=KinesisConfig(stream="s", senders=1))
    cfg.batch.max_records = 40
    box = {}
    t = threading.Thread(target=lambda: box.update(
        replay(cfg, [str(p) for p in paths], kinesis_client=client, end_marker=end_marker)))
    t.start()
    t.join(120)
    assert not box["problems"] and not sum(box["publish_dropped"].values()), box
    return box


def test_resharding_throttling_and_undecodable_records(capture, redis_db, tmp_path):  # noqa: F811
    """In process, against the stand-in: shard 0 is split after part 1 of the capture; a
    worker started afterwards reads the parent to its end before either child, reports the
    flows still open in it, and goes on in the children; throttled reads and an expired
    iterator are retried; records that are not packet batches are counted and skipped.
    Every packet is in exactly one flow record, and every flow the split did not cut is
    the one analyze makes."""

    from collectors.kpl import MAGIC

    parts, ref = capture
    k = StandInKinesis(2)
    published = _replay(k, parts[:1], end_marker=False)["published"]
    parent = "shardId-000000000000"
    children = k.split(parent)
    # Not packet batches: a plain record, and an aggregate whose digest does not match.
    k.put(k.shards[children[0]]["lo"], b"not msgpack", "junk")
    k.put(k.shards[children[1]]["lo"], MAGIC + b"\x1a\x02\x1a\x00" + b"\0" * 16, "junk")
    published += _replay(k, parts[1:], end_marker=True)["published"]
    k.fail = ["ProvisionedThroughputExceededException"] * 3 + ["ExpiredIteratorException"]

    async def run() -> tuple[dict, dict]:
        r, runtime, out, c = solo_consumer(k, redis_db, tmp_path / "out")
        stop = asyncio.Event()
        task = asyncio.create_task(c.run(stop))
        await wait_until_async(
            lambda: runtime.stats["packet_records"] >= published and parent in c.finished
            and len(c.owned) == 3 and not any(runtime.due(tp) for tp in runtime.owned),
            30, interval=0.2, fail=False)  # the asserts below say which part is missing
        stop.set()
        await task
        out.close()
        r.close()
        return dict(runtime.stats), {**c.stats, "finished": c.finished}

    rstats, cstats = asyncio.run(run())
    assert rstats["packet_records"] == published, (rstats, cstats)
    assert cstats["finished"] == {parent}
    assert cstats["undecodable"] == 2 and cstats["get_records_throttled"] == 3
    assert cstats["iterators_expired"] == 1 and cstats["shards_finished"] == 1
    # No child was read before the parent's last read.
    last_parent = max(i for i, (sid, _) in enumerate(k.reads) if sid == parent)
    first_child = min(i for i, (sid, _) in enumerate(k.reads) if sid in children)
    assert first_child > last_parent
    flows = [json.loads(line) for line in (tmp_path / "out" / "flows.jsonl").read_text().splitlines()]
    assert len({f["flow_id"] for f in flows}) == len(flows)
    assert sum(f["packets"] for f in flows) == published
    assert sum(f["bytes"] for f in flows) == sum(f["bytes"] for f in ref["flows"].values())
    # Flows open in the parent when it closed are reported at its end ("eof": the same id
    # as analyze's record, fewer packets) and go on in a child as a new record; each
    # conversation's packets and bytes are still all there, once.
    same = [f for f in flows if ref["flows"].get(f["flow_id"]) == f]
    ended = [f for f in flows if f["flow_id"] in ref["flows"] and f not in same]
    continued = [f for f in flows if f["flow_id"] not in ref["flows"]]
    assert ended and continued and len(same) >= 0.6 * len(ref["flows"])
    for f in ended:
        r = ref["flows"][f["flow_id"]]
        assert f["end_reason"] == "eof" and f["packets"] < r["packets"], (f, r)

    def per_conversation(records):
        c = collections.Counter()
        for f in records:
            c[f["community_id"], "packets"] += f["packets"]
            c[f["community_id"], "bytes"] += f["bytes"]
        return c
    assert per_conversation(flows) == per_conversation(ref["flows"].values())


def solo_consumer(kinesis, redis_url: str, out_dir: Path):
    """One in-process Kinesis consumer over ``kinesis`` (a StandInKinesis) with a real Redis,
    checkpointing every 0.2 s and writing results to ``out_dir``: (redis, runtime, outputs,
    consumer)."""
    import redis

    from stream_app.adapters.kinesis import ConsumerConfig, KinesisConsumer
    from stream_app.core.processor import CoreConfig
    from stream_app.runtime.outputs import FolderResults
    from stream_app.runtime.runtime import Runtime, RuntimeConfig
    from stream_app.state.codec import Codec
    from stream_app.state.store import RedisStore

    r = redis.Redis.from_url(redis_url)
    runtime = Runtime(RedisStore(r), Codec(b"test-state-key"), CoreConfig(),
                      RuntimeConfig(checkpoint_interval=0.2, idle_advance=0,
                                    contiguous_offsets=False))
    out = FolderResults(out_dir)
    c = KinesisConsumer(ConsumerConfig(stream="s", app_name="t", worker_id="solo",
                                       lease_ms=1500, shard_refresh=0.3, poll_interval=0.05,
                                       read_interval=0.0, settle=0.0),
                        runtime, out, r, kinesis)
    return r, runtime, out, c
