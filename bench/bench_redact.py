#!/usr/bin/env python3
"""The cost of redaction (stream_app/core/redact.py): `mirrorscope analyze` with its defaults
(credentials in headers and URIs redacted) against the same command with --keep-credentials
(the baseline: nothing redacted), on the same synthetic capture, in the same run.

usage: python bench/bench_redact.py [--flows N] [--secret-share F] [--repeat N] [--core N]

The capture (made in a temp dir, tests/services/traffic.py) holds N HTTP conversations; a share
F of the requests carry credentials in the URI and the Referer (a token, an api_key, a
presigned S3 URL, a /token/<value>/ path), the others plain URIs with ordinary parameters, which
still pay for the screening. Both runs are pinned to one core; the fastest of --repeat is kept.
Prints requests/s of each and the ratio of their CPU seconds, baseline/redacted (1.0 = free,
below 1 = redaction costs that share).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
from bench_analyze import BenchError, find_ours, run_measured  # noqa: E402

from tests.services.traffic import capture_of, tcp_flows, write_pcap  # noqa: E402

SECRET_TARGETS = (
    "/api/v1/items/{i}?page=2&token=tk{i}abcdef",
    "/maps/tile/{i}.png?z=3&api_key=AIza{i}xyz",
    "/bucket/obj{i}.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA{i}%2F20260101"
    "&X-Amz-Date=20260101T000000Z&X-Amz-SignedHeaders=host&X-Amz-Signature=ab{i}cd",
    "/v2/token/tk{i}zz/profile",
)
PLAIN_TARGETS = (
    "/item/{i}", "/search?q=shoes&page={i}&sort=price", "/static/app.{i}.js",
    "/api/v1/users/{i}/orders?limit=20&offset=40",
)


def make_capture(path: Path, flows: int, share: float, seed: int = 7) -> int:
    rnd = random.Random(seed)
    grams = []
    for i in range(flows):
        if rnd.random() < share:
            target = rnd.choice(SECRET_TARGETS).format(i=i)
            referer = f"Referer: https://idp.example/cb?state=1&access_token=at{i}\r\n"
        else:
            target = rnd.choice(PLAIN_TARGETS).format(i=i)
            referer = "Referer: https://shop.example/list?page=1\r\n"
        req = (f"GET {target} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench\r\n"
               f"{referer}Accept: */*\r\n\r\n").encode()
        grams += tcp_flows(1, seed=i, client_net=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.0",
                           request=req, response_len=200)
    write_pcap(path, capture_of(grams))
    return flows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=20000)
    ap.add_argument("--secret-share", type=float, default=0.25)
    ap.add_argument("--repeat", type=int, default=3, help="runs each; the fastest is kept")
    ap.add_argument("--core", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        ours = find_ours()
    except BenchError as e:
        print(f"bench_redact: error: {e}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="mirrorscope-bench-redact."))
    try:
        cap = tmp / "secrets.pcap"
        n = make_capture(cap, args.flows, args.secret_share)
        best: dict[str, dict] = {}
        for i in range(args.repeat):
            for name, extra in (("redacted", []), ("baseline", ["--keep-credentials"])):
                out = tmp / f"{name}{i}"
                r = run_measured(name, [str(ours), "analyze", str(cap), "--out", str(out),
                                        "--no-progress", "--no-detect", *extra], args.core, tmp)
                lines = (out / "http.jsonl").read_text().splitlines()
                r["requests"] = len(lines)
                r["redacted"] = sum("[redacted]" in x for x in lines)
                if name not in best or r["wall_s"] < best[name]["wall_s"]:
                    best[name] = r
        red, base = best["redacted"], best["baseline"]
        assert red["requests"] == base["requests"] == n, (red["requests"], base["requests"], n)
        ratio = base["cpu_s"] / red["cpu_s"]  # CPU: the machine is shared, wall time is noisy
        print(json.dumps({
            "flows": n, "secret_share": args.secret_share,
            "redacted": {"wall_s": red["wall_s"], "cpu_s": red["cpu_s"],
                         "requests_per_s": round(n / red["wall_s"]),
                         "records_with_redactions": red["redacted"]},
            "baseline_keep_credentials": {"wall_s": base["wall_s"], "cpu_s": base["cpu_s"],
                                          "requests_per_s": round(n / base["wall_s"]),
                                          "records_with_redactions": base["redacted"]},
            "ratio_redacted_vs_baseline": round(ratio, 3),
        }, indent=2))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
