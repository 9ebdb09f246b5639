#!/usr/bin/env python3
"""Snapshot and restore cost of flow state: the typed codec (stream_app/state/codec.py,
version 2) against the pickle codec of the release before (bench/_pickle_codec.py), in the
same run, on the same flows.

usage: python bench/bench_state.py [--flows 20000] [--repeat 5]

Flows: synthetic HTTP conversations (tests/services/traffic.py), cut mid-way so that the
state holds every stage: handshakes, requests waiting for their response, responses being
framed, closing connections. Each codec encodes every flow (what a full snapshot does), then
decodes every blob into a fresh Processor (what a take-over does); best of --repeat runs.
Prints the times per flow, the blob sizes, and the ratios new/old (target: within ~1.5x),
then one JSON line with every number.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))


def flows_mid_capture(n: int):
    """A Processor holding n HTTP flows at assorted stages."""
    from collectors.capture import open_capture
    from collectors.decode import Decoder
    from collectors.source import capture_batches
    from stream_app.adapters.embedded import payload_policy
    from stream_app.core.processor import CoreConfig, Processor
    from tests.services.traffic import capture_of, tcp_flows, write_pcap

    grams = tcp_flows(n, seed=3)
    # Round-robin order (ten packets per flow): cutting at 4.5 rounds leaves half the flows
    # with a request pending, the other half with its response being framed; a tenth of the
    # flows get three more rounds (closing).
    cut = int(4.5 * n)
    extra = [g for g in grams[cut:] if g.flow % 10 == 0][: 3 * (n // 10)]
    config = CoreConfig(detect=None)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "state.pcap"
        write_pcap(p, capture_of(grams[:cut] + extra))
        recs = [r for b in capture_batches(open_capture(p), Decoder(payload=payload_policy(
            config.l7))) for r in b]
    proc = Processor(config)
    proc.process(recs)
    return proc, config


def best(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()

    import _pickle_codec
    from stream_app.core.processor import Processor
    from stream_app.state.codec import Codec

    proc, config = flows_mid_capture(a.flows)
    flows = list(proc.flows.flows.values())
    analysed = sum(1 for f in flows if f.l7)
    key = b"bench-state-key"
    codecs = {"pickle (previous release)": _pickle_codec.Codec(key), "typed (v2)": Codec(key)}
    res: dict[str, dict] = {}
    for name, codec in codecs.items():
        dumps = codec.pickler(proc)
        blobs = [dumps(f) for f in flows]
        target = Processor(config)
        back = codec.loads_many(blobs, target)
        assert len(back) == len(flows)
        t_dump = best(lambda: [dumps(f) for f in flows], a.repeat)
        t_load = best(lambda: codec.loads_many(blobs, Processor(config)), a.repeat)
        size = sum(map(len, blobs))
        res[name] = {"dump_us": t_dump / len(flows) * 1e6, "load_us": t_load / len(flows) * 1e6,
                     "bytes_per_flow": size / len(flows)}
    old, new = res["pickle (previous release)"], res["typed (v2)"]
    print(f"{len(flows)} flows ({analysed} with HTTP analysis), best of {a.repeat}")
    for name, r in res.items():
        print(f"  {name:26s} snapshot {r['dump_us']:6.2f} us/flow   restore {r['load_us']:6.2f}"
              f" us/flow   {r['bytes_per_flow']:7.1f} bytes/flow")
    ratios = {"snapshot": new["dump_us"] / old["dump_us"],
              "restore": new["load_us"] / old["load_us"],
              "size": new["bytes_per_flow"] / old["bytes_per_flow"]}
    print("  typed / pickle: " + "   ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
          + "   (target: time within ~1.5x)")
    print(json.dumps({"flows": len(flows), "http_flows": analysed, "results": res,
                      "ratios": ratios}))


if __name__ == "__main__":
    main()
