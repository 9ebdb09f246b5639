"""Writes flow state blobs in this release's format (typed records, state version 2), so the
next release has its "previous release" test ready (tests/test_state_format.py reads them
now, and must go on reading them after any change to a state Struct).

Run once, from the repository root, with the release that writes version 2:

    .venv/bin/python tests/data/state-v2/make_fixtures.py

Same cases and cuts as tests/data/state-v1/make_fixtures.py: for every case and partition the
log is applied up to the cut (where the state holds the most varied objects), snapshotted, and
the rest applied; the results after the cut are what a restoring worker must make.
Output: <case>.msgpack and key.bin beside this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
KEY = b"state-v2-fixture-key-not-secret"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE.parent / "state-v1"))


def main() -> None:
    import msgspec

    from make_fixtures import pick_cut  # the v1 generator's choice of cut
    from stream_app.core.processor import CoreConfig
    from stream_app.state.codec import Codec
    from stream_app.state.partition import STATE_VERSION, PartitionState
    from tests.state_cases import CASES, case_id, partition_logs, records_of

    assert STATE_VERSION == 2, "this generator writes version 2; make a new one for yours"
    codec = Codec(KEY)
    config = CoreConfig(detect=None)
    (HERE / "key.bin").write_bytes(KEY)
    for capture, seed in CASES:
        logs = partition_logs(records_of(capture, seed))
        parts = []
        for p, log in logs.items():
            name = f"g:t:{p}"
            cut = pick_cut(PartitionState(name, config, codec), log)
            st = PartitionState(name, config, codec)
            for off in range(cut + 1):
                st.apply(off, log[off])
            snap = st.snapshot()
            flows, http = [], []
            for off in range(cut + 1, len(log)):
                res = st.apply(off, log[off])
                flows += res.flows
                http += res.http
            parts.append({"name": name, "cut": cut, "meta": snap.meta, "blobs": snap.put,
                          "flows": flows, "http": http})
        out = HERE / f"{case_id(capture, seed)}.msgpack"
        out.write_bytes(msgspec.msgpack.encode({"capture": capture, "seed": seed,
                                                "partitions": parts}))
        print(out.name, sum(len(x["blobs"]) for x in parts), "flows",
              sum(len(x["http"]) for x in parts), "http records after the cuts")


if __name__ == "__main__":
    main()
