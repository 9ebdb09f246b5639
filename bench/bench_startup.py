"""How long `mirrorscope --help`, `--version` and `analyze` on the bundled sample take to start
and finish, against the bare interpreter (`python -c pass`) measured in the same run.

    .venv/bin/python bench/bench_startup.py                   # 20 runs each, interleaved
    .venv/bin/python bench/bench_startup.py --before DIR      # also a source tree to compare with,
                                                              # e.g. git archive main | tar -x -C DIR

Each command runs with the interpreter that runs this script, in a fresh process, the runs of
all commands interleaved so a busy machine slows them alike (a small hyperfine). It prints the
median and mean of the wall time, and each command's ratio to the bare interpreter; with
--before, the ratio of this tree to the other one for the same command (that tree is put first
on PYTHONPATH; copy the built C extensions into it for a fair analyze). `python -X importtime`
shows where the time of one run goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "docs" / "samples" / "mirror-lab-http.pcap"
CLI = "import sys; from stream_app.cli import main; sys.argv[0] = 'mirrorscope'; main()"


def commands(out: str) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "python -c pass (baseline)": [py, "-c", "pass"],
        "mirrorscope --help": [py, "-c", CLI, "--help"],
        "mirrorscope --version": [py, "-c", CLI, "--version"],
        "mirrorscope analyze sample": [py, "-c", CLI, "analyze", str(SAMPLE), "--out", out,
                                       "--no-progress"],
    }


def once(argv: list[str], env: dict, cwd: str) -> float:
    # cwd: an empty folder, since `python -c` puts the working directory before PYTHONPATH.
    t = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--before", type=Path, help="another source tree to compare with")
    args = ap.parse_args()
    trees = {"this tree": ROOT}
    if args.before:
        trees["before"] = args.before.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {(tree, name): [] for tree in trees for name in commands(tmp)}
        for i in range(args.warmup + args.repeat):
            for tree, path in trees.items():
                env = dict(os.environ, PYTHONPATH=str(path))
                for name, argv in commands(os.path.join(tmp, f"out-{i}")).items():
                    if tree != "this tree" and "baseline" in name:
                        continue
                    t = once(argv, env, tmp)
                    if i >= args.warmup:
                        runs[(tree, name)].append(t)
    base = statistics.median(runs[("this tree", "python -c pass (baseline)")])
    print(f"{'tree':10} {'command':30} {'median s':>9} {'mean s':>8} {'x baseline':>11} {'x before':>9}")
    for (tree, name), ts in runs.items():
        if not ts:
            continue
        med = statistics.median(ts)
        rel = ""
        if args.before and tree == "this tree" and ("before", name) in runs and runs[("before", name)]:
            rel = f"{med / statistics.median(runs[('before', name)]):.2f}"
        print(f"{tree:10} {name:30} {med:9.3f} {statistics.mean(ts):8.3f} {med / base:11.2f} {rel:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
