#!/usr/bin/env python3
"""Long fuzzing of the stream core: the hypothesis tier (tests/test_fuzz_core.py) with every
example count multiplied.

usage: python bench/fuzz_core.py [MULTIPLIER] [--seed S]      (MULTIPLIER defaults to 50)

The properties (HTTP framer, reassembly, flow table under hostile input: heads of 64 KiB to
50 MB, 10k headers, pathological segmentation, sequence wraps and jumps, shuffled segments,
arbitrary packet records) are the CI tier's; only the number of examples grows. Prints the
pytest summary and the time taken; exit status 1 if any property failed (hypothesis prints
the shrunk failing example).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("multiplier", nargs="?", type=int, default=50)
    ap.add_argument("--seed", type=int, help="hypothesis seed (default: random)")
    a = ap.parse_args()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           str(ROOT / "tests" / "test_fuzz_core.py")]
    if a.seed is not None:
        cmd.append(f"--hypothesis-seed={a.seed}")
    env = {**os.environ, "MIRRORSCOPE_FUZZ_EXAMPLES": str(a.multiplier)}
    t = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    print(f"fuzz_core: multiplier {a.multiplier}, {time.perf_counter() - t:.1f} s, "
          f"{'ok' if rc == 0 else 'FAILED'}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
