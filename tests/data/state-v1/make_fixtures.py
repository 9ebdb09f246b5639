"""Writes flow state blobs as the release before typed state (pickle, state version 1)
wrote them, for tests/test_state_format.py's "previous release" test.

Run once, from the repository root, with the core classes of that release:

    .venv/bin/python tests/data/state-v1/make_fixtures.py

The codec and partition modules are taken from git at the release's commit (1ca7910) and
installed under their own module names, so the pickles name exactly the globals the old
release's pickles name. The committed blobs were made with that release's core classes too:
its tree exported (``git archive 1ca7910``), this script and tests/state_cases.py copied into
it, and run there with ``GIT_REPO`` naming this repository. For every case of tests/state_cases.py and every partition, the log is
applied up to a cut, the state is snapshotted (meta + one signed blob per flow), and the rest
of the log is applied: the results made after the cut are the expected results of a worker
that restores the blobs and goes on. Output: <case>.msgpack and key.bin beside this script.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
OLD = "1ca7910"
KEY = b"state-v1-fixture-key-not-secret"
sys.path.insert(0, str(ROOT))


def old_module(name: str, path: str) -> types.ModuleType:
    src = subprocess.run(["git", "show", f"{OLD}:{path}"], cwd=os.environ.get("GIT_REPO", ROOT), check=True,
                         capture_output=True, text=True).stdout
    m = types.ModuleType(name)
    m.__file__ = f"<{OLD}:{path}>"
    sys.modules[name] = m
    exec(compile(src, m.__file__, "exec"), m.__dict__)
    return m


def richness(st) -> int:
    """How much of a flow state's variety a snapshot now would hold: the cut is put where
    segments wait (out of order, or for the other direction) if anywhere."""
    score = 0
    for f in st.proc.flows.flows.values():
        a = f.l7
        if f.l7_held:
            score = max(score, 1)
        if a:
            # (HTTP analyzers only: the other analyzers came after version 1; the version-2
            # script reuses this choice of cut.)
            conv, orig, resp = (getattr(a, n, None) for n in ("conv", "orig", "resp"))
            if conv is not None and (conv.pending or conv.requests.txn or conv.responses.txn):
                score = max(score, 2)
            if orig is not None and (orig.pending or resp.pending):
                score = max(score, 3)
            if getattr(a, "waiting", None):
                score = max(score, 4)
    return score


def pick_cut(st, log) -> int:
    best, cut = -1, len(log) // 2
    for off in range(len(log) - 1):
        st.apply(off, log[off])
        s = richness(st)
        if s > best:
            best, cut = s, off
    return cut


def main() -> None:
    import msgspec

    old_module("stream_app.state.codec", "stream_app/state/codec.py")
    partition = old_module("stream_app.state.partition", "stream_app/state/partition.py")
    from stream_app.core.processor import CoreConfig
    from tests.state_cases import CASES, case_id, partition_logs, records_of

    codec = sys.modules["stream_app.state.codec"].Codec(KEY)
    config = CoreConfig(detect=None)
    (HERE / "key.bin").write_bytes(KEY)
    for capture, seed in CASES:
        logs = partition_logs(records_of(capture, seed))
        parts = []
        for p, log in logs.items():
            name = f"g:t:{p}"
            cut = pick_cut(partition.PartitionState(name, config, codec), log)
            st = partition.PartitionState(name, config, codec)
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
