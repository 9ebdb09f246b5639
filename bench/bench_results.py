"""What issue #18's features cost, each against a named baseline measured in the same run.

1. Live output (stream_app/sinks/live.py) vs `analyze`'s buffered writer
   (stream_app/sinks/localfiles.JsonlWriter, 1 MiB buffer, written at close): the same flow
   records in batches of --batch, as the core hands them out; the live writer also writes out
   every --flush-s of simulated time and rotates at --rotate-mb.
2. `mirrorscope query top talkers` (DuckDB over flows.jsonl) vs the hand-written way it
   replaces: read flows.jsonl line by line with json.loads and sum bytes per pair in Python
   (what `jq` scripts do, in-process so process start-up is not counted for either).

    .venv/bin/python bench/bench_results.py [--records 200000] [--batch 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_app.core.processor import Results  # noqa: E402
from stream_app.adapters.embedded import LocalOutputs  # noqa: E402
from stream_app.sinks.live import LiveOutputs  # noqa: E402
from tests.sink_helpers import make_flow  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--flush-s", type=float, default=1.0)
    ap.add_argument("--rotate-mb", type=float, default=16.0)
    a = ap.parse_args(argv)

    flows = [make_flow(i) for i in range(a.records)]
    batches = [Results(flows=flows[i:i + a.batch]) for i in range(0, len(flows), a.batch)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-results-"))

    def local():
        out = LocalOutputs(tmp / "local")
        for b in batches:
            out.write(b)
        out.close()

    def live():
        d = tmp / "live"
        if d.exists():
            for p in d.iterdir():
                p.unlink()
        clock = [0.0]
        out = LiveOutputs(d, flush_s=a.flush_s, rotate_bytes=int(a.rotate_mb * (1 << 20)))
        for f in out.files.values():
            f.clock = lambda: clock[0]
        # Simulated time: the whole run spread over 60 s, polled every batch as the
        # collector's housekeeping does (every few ms).
        step = 60.0 / len(batches)
        for b in batches:
            clock[0] += step
            out.write(b)
            out.poll(clock[0])
        out.close()

    t_local = best(local, a.repeat)
    t_live = best(live, a.repeat)
    print(f"live output: {a.records:,} flow records in batches of {a.batch}")
    print(f"  baseline analyze's buffered JsonlWriter: {t_local:.3f} s "
          f"({a.records / t_local:,.0f} records/s)")
    print(f"  live (flush every {a.flush_s} s, rotate at {a.rotate_mb} MB): {t_live:.3f} s "
          f"({a.records / t_live:,.0f} records/s)")
    print(f"  ratio live / baseline: {t_live / t_local:.2f}x the time")

    path = tmp / "local"

    def python_way():
        pairs = collections.Counter()
        with open(path / "flows.jsonl") as fh:
            for line in fh:
                r = json.loads(line)
                pairs[(r["srcaddr"], r["dstaddr"])] += r["bytes"]
        return pairs.most_common(10)

    def duck_way():
        from stream_app.query import run
        [r] = run(path, ["top", "talkers"], limit=10)
        return [((x[0], x[1]), x[2]) for x in r.rows]

    assert python_way() == duck_way(), "the two ways disagree"
    t_py = best(python_way, a.repeat)
    t_duck = best(duck_way, a.repeat)
    print(f"top talkers over {a.records:,} flow records ({(path / 'flows.jsonl').stat().st_size / 1e6:.0f} MB):")
    print(f"  baseline json.loads + Counter: {t_py:.3f} s")
    print(f"  mirrorscope query (DuckDB): {t_duck:.3f} s")
    print(f"  ratio baseline / query: {t_py / t_duck:.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
