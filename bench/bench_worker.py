#!/usr/bin/env python3
"""The stream worker's throughput through Kafka, Faust and Redis, against the core alone.

usage: python bench/bench_worker.py [--capture FILE] [--partitions 4] [--detect] [--processes N]
                                    [--bootstrap HOST:PORT --redis-url URL]

1. Starts a local Kafka and Redis (tests/services; or uses the ones given), and replays
   the capture into a packet topic of PARTITIONS partitions with `mirrorscope collect --pcap`
   (so the batches are exactly what collectors publish).
2. Baseline, the core alone: the same batches, read back from the topic into memory, applied
   in this process by one PartitionState per partition (the code the worker runs, without
   Kafka, Faust or Redis).
3. One `mirrorscope worker` on the pre-loaded topic: packet records/s from its first applied
   batch to its last (polling its /readyz counters), so start-up is not counted.
4. Two workers (a new consumer group and topic): once each owns two partitions, the same
   batches are copied into their topic; aggregate packet records/s from the first batch
   applied to the last (the copy runs on the same machine meanwhile).

Prints the rates, the worker's ratio to the core (overhead = 1 - ratio; target at most 30%),
and whether one worker reaches 100,000 packet records/s; then one JSON line with every number.
HTTP analysis is on; detectors are off unless --detect (then their state is in Redis).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
DEFAULT_CAPTURE = BENCH / ".data" / "mirror-http-500k.pcap"
MIRRORSCOPE = str(Path(sys.executable).with_name("mirrorscope"))


def replay(bootstrap: str, topic: str, capture: Path) -> dict:
    r = subprocess.run([MIRRORSCOPE, "collect", "--transport", "kafka", "--kafka-bootstrap",
                        bootstrap, "--kafka-topic", topic, "--pcap", str(capture),
                        "--log-level", "warning"], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        sys.exit(f"collect failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout)["totals"]


def core_alone(bootstrap: str, topic: str, detect: bool) -> tuple[float, int]:
    import msgspec

    from schemas.records import PacketBatch
    from stream_app.core.detectors import Detectors
    from stream_app.core.processor import CoreConfig
    from stream_app.state.codec import Codec
    from stream_app.state.partition import PartitionState
    from tests.services.kafka_service import consume_all

    dec = msgspec.msgpack.Decoder(PacketBatch).decode
    msgs = consume_all(bootstrap, topic, timeout=600, idle=2.0)
    values = [(m.partition, m.offset, m.value) for m in msgs]
    cfg = CoreConfig(detect=None)
    states: dict[int, PartitionState] = {}
    det = Detectors() if detect else None
    n = 0
    t = time.perf_counter()
    for p, off, value in values:  # decoding is part of the worker's job too
        st = states.get(p)
        if st is None:
            st = states[p] = PartitionState(f"bench:{p}", cfg, Codec(b"k"))
        b = dec(value)
        res = st.apply(off, b)
        n += len(b.records)
        if det is not None and res is not None:
            det.observe(res.flows, res.http)
    return time.perf_counter() - t, n


def ready(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return json.loads(r.read())
    except Exception:
        return None


def copy_topic(bootstrap: str, src: str, dst: str) -> None:
    """The messages of ``src`` into the same partitions of ``dst``, as fast as kafka-python
    sends them (lz4, like the collector)."""
    from kafka import KafkaProducer

    from tests.services.kafka_service import consume_all
    prod = KafkaProducer(bootstrap_servers=bootstrap, compression_type="lz4", linger_ms=5,
                         batch_size=1 << 20, max_request_size=8 << 20)
    for m in consume_all(bootstrap, src, timeout=600, idle=2.0):
        prod.send(dst, key=m.key, value=m.value, partition=m.partition)
    prod.flush()
    prod.close()


def run_workers(k: int, bootstrap: str, redis_url: str, topic: str, total: int, detect: bool,
                workdir: Path, feed=None, processes: int = 1) -> dict:
    """Start k workers on ``topic``; with ``feed`` (a topic to copy from), wait until each
    owns its share of the partitions first, then copy the batches in, so that the rate is
    that of k workers at work from the start (not one that had it all before the others
    joined)."""
    from tests.services.kafka_service import free_port
    group = f"bench-{uuid.uuid4().hex[:6]}"
    procs, ports = [], []
    env = {**os.environ, "MIRRORSCOPE_STATE_KEY": "bench"}
    for i in range(k):
        port = free_port()
        ports.append(port)
        args = [MIRRORSCOPE, "worker", "--bootstrap", bootstrap, "--redis-url", redis_url,
                "--packet-topic", topic, "--group", group, "--web-port", str(port),
                "--web-bind", "127.0.0.1", "--datadir", str(workdir / f"{group}-{i}"),
                "--log-level", "warning", "--detect" if detect else "--no-detect",
                "--processes", str(processes)]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, env=env,
                                      stderr=open(workdir / f"{group}-{i}.err", "wb")))
    if feed is not None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            shares = [len((ready(p) or {}).get("assigned", [])) for p in ports]
            if all(shares) and sum(shares) == int(os.environ.get("BENCH_PARTITIONS", "4")):
                break
            time.sleep(0.2)
        else:
            sys.exit("the workers did not share the partitions in 120 s")
        import threading
        threading.Thread(target=copy_topic, args=(bootstrap, feed, topic), daemon=True).start()
    first = last = None
    done = 0
    deadline = time.monotonic() + 1800
    try:
        while time.monotonic() < deadline:
            counts = [(ready(p) or {}).get("stats", {}).get("packet_records", 0) for p in ports]
            now = time.perf_counter()
            done = sum(counts)
            if done and first is None:
                first = now
            if done >= total:
                last = now
                break
            if any(p.poll() is not None for p in procs):
                sys.exit(f"a worker exited; see {workdir}")
            time.sleep(0.05)
        per = [(ready(p) or {}).get("stats", {}) for p in ports]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    if last is None:
        sys.exit(f"workers applied {done} of {total} records before the deadline")
    return {"seconds": last - first, "records": done,
            "per_worker": [s.get("packet_records", 0) for s in per]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--detect", action="store_true")
    ap.add_argument("--processes", type=int, default=1,
                    help="core processes per worker (mirrorscope worker --processes)")
    ap.add_argument("--bootstrap")
    ap.add_argument("--redis-url")
    args = ap.parse_args()
    if not args.capture.is_file():
        sys.exit(f"{args.capture} not found: make it with bench/make_capture.sh (root)")
    from tests.services.kafka_service import LocalKafka, create_topic
    from tests.services.redis_service import LocalRedis

    work = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    services = []
    try:
        bootstrap, redis_url = args.bootstrap, args.redis_url
        if not bootstrap:
            k = LocalKafka(work / "kafka")
            k.start()
            services.append(k)
            bootstrap = k.bootstrap
        if not redis_url:
            r = LocalRedis(work / "redis")
            r.start()
            services.append(r)
            redis_url = r.url
        topic = f"bench-packets-{uuid.uuid4().hex[:6]}"
        create_topic(bootstrap, topic, args.partitions)
        for t in ("mirrorscope.flows", "mirrorscope.http", "mirrorscope.alerts"):
            try:
                create_topic(bootstrap, t, 2)
            except Exception:
                pass  # already there (an existing broker)
        print(f"replaying {args.capture.name} into {topic} ({args.partitions} partitions) ...",
              flush=True)
        sent = replay(bootstrap, topic, args.capture)
        total = sent["published"]
        core_s, n = core_alone(bootstrap, topic, args.detect)
        assert n == total, (n, total)
        core_rate = total / core_s
        print(f"core alone:      {total:,} packet records in {core_s:.2f} s = "
              f"{core_rate:,.0f} records/s", flush=True)
        one = run_workers(1, bootstrap, redis_url, topic, total, args.detect, work,
                          processes=args.processes)
        rate1 = total / one["seconds"]
        print(f"1 worker:        {rate1:,.0f} records/s ({one['seconds']:.2f} s; "
              f"--processes {args.processes})", flush=True)
        topic2 = topic + "-2"
        create_topic(bootstrap, topic2, args.partitions)
        os.environ["BENCH_PARTITIONS"] = str(args.partitions)
        two = run_workers(2, bootstrap, redis_url, topic2, total, args.detect, work, feed=topic,
                          processes=args.processes)
        rate2 = total / two["seconds"]
        print(f"2 workers:       {rate2:,.0f} records/s aggregate ({two['seconds']:.2f} s; "
              f"split {two['per_worker']})", flush=True)
        ratio = rate1 / core_rate
        print(f"ratio worker/core: {ratio:.3f}  (framework overhead {1 - ratio:.1%}; "
              f"target at most 30%: {'met' if 1 - ratio <= 0.30 else 'NOT met'})")
        print(f"per worker: {rate1:,.0f} records/s (target 100,000: "
              f"{'met' if rate1 >= 100_000 else 'NOT met'}); 2 workers / 1 worker: "
              f"{rate2 / rate1:.2f}x on {os.cpu_count()} CPUs")
        print(json.dumps({"capture": str(args.capture), "records": total,
                          "partitions": args.partitions, "detect": args.detect,
                          "processes": args.processes,
                          "core_rate": round(core_rate), "worker_rate": round(rate1),
                          "two_worker_rate": round(rate2), "ratio": round(ratio, 3),
                          "overhead": round(1 - ratio, 3), "cpus": os.cpu_count()}))
    finally:
        for s in services:
            s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
