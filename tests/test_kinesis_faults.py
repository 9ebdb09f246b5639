"""The Kinesis worker when the core raises on a batch (issue 20: a batch is applied whole or
not at all), in process against tests/test_kinesis_worker.py's Kinesis stand-in and a real
Redis: the shard goes back to its last snapshot, the batch is skipped whole, and every other
packet is in exactly one flow record. The core raising is a core bug (its contract is never to
raise): the real Processor is made to raise half-way through one batch, after taking the first
half of its packets."""

from __future__ import annotations

import asyncio
import json

from stream_app.core.processor import Processor
from tests.services.fixtures import kafka_broker  # noqa: F401  (capture's fixtures)
from tests.test_kinesis_worker import StandInKinesis, _replay, solo_consumer
from tests.test_worker_kafka import capture  # noqa: F401
from tests.waiting import wait_until_async


def test_a_batch_the_core_raises_on_sends_the_shard_back_to_its_snapshot(
        capture, redis_db, tmp_path, monkeypatch):  # noqa: F811
    parts, ref = capture
    k = StandInKinesis(2)
    published = _replay(k, parts, end_marker=True)["published"]
    real = Processor.process
    seen = {"batches": 0, "poison": None}

    def process(self, recs):
        # The 40th batch with packets the core sees is the poison: it raises on it every
        # time, after the first half of its packets went in.
        if recs:
            seen["batches"] += 1
            if seen["batches"] == 40:
                seen["poison"] = (recs[0].ts_ns, len(recs))
        if recs and seen["poison"] is not None and recs[0].ts_ns == seen["poison"][0]:
            real(self, recs[:len(recs) // 2])
            raise RecursionError("maximum recursion depth exceeded")
        return real(self, recs)
    monkeypatch.setattr(Processor, "process", process)

    async def run() -> tuple[dict, dict]:
        r, runtime, out, c = solo_consumer(k, redis_db, tmp_path / "out")
        stop = asyncio.Event()
        task = asyncio.create_task(c.run(stop))

        def settled():
            want = published - seen["poison"][1] if seen["poison"] else None
            return (want is not None and runtime.stats["packet_records"] >= want
                    and runtime.stats["batches_failed_skipped"]
                    and not any(runtime.due(tp) for tp in runtime.owned))
        await wait_until_async(settled, 60, interval=0.2, fail=False)  # the asserts say what
        stop.set()
        await task
        out.close()
        r.close()
        return dict(runtime.stats), dict(c.stats)

    rstats, cstats = asyncio.run(run())
    assert seen["poison"] is not None
    poison_packets = seen["poison"][1]
    assert rstats["batches_failed"] == 1 and rstats["batches_failed_skipped"] == 1, rstats
    assert cstats["shard_restarts"] == 1, cstats
    # Every packet but the poison batch's counted once, none of its first half.
    assert rstats["packet_records"] == published - poison_packets
    flows: dict = {}
    for line in (tmp_path / "out" / "flows.jsonl").read_text().splitlines():
        f = json.loads(line)
        assert flows.setdefault(f["flow_id"], f) == f  # made again after the restart: same
    assert sum(f["packets"] for f in flows.values()) == published - poison_packets
    assert len(flows) >= len(ref["flows"]) - poison_packets
