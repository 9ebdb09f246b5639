"""Live output of embedded mode (stream_app/sinks/live.py, stream_app/livemode.py): records are
in the files within flush_s, files rotate by size and age under the documented names, an
earlier run's file is kept, and `collect --embedded` takes analyze's analysis options.
(The live-lab test, tests/e2e/test_live_lab.py, checks the timing with real traffic.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import msgspec

from schemas.records import FlowRecord
from stream_app import query as q
from stream_app.sinks.live import RotatingJsonl
from tests.conftest import CORPUS, SAMPLE
from tests.sink_helpers import make_flow

ROTATED = re.compile(r"^flows-\d{8}T\d{6}Z-\d{4}\.jsonl$")


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def test_records_are_written_within_flush_s(tmp_path):
    clock = Clock()
    w = RotatingJsonl(tmp_path, "flows", flush_s=1.0, clock=clock)
    w.write([make_flow(1), make_flow(2)])
    w.poll()
    assert lines(w.path) == []  # buffered: not yet a second
    clock.t += 0.5
    w.write([make_flow(3)])
    w.poll()
    assert lines(w.path) == []
    clock.t += 0.5
    w.poll()  # a second after the last write-out: all three are there, whole lines
    assert [f["flow_id"] for f in lines(w.path)] == ["flow-00000001", "flow-00000002", "flow-00000003"]
    assert w.path.read_bytes().endswith(b"\n")
    w.close()


def test_rotation_by_size_and_age_with_documented_names(tmp_path):
    clock = Clock()
    one = len(msgspec.json.encode(make_flow(0))) + 1
    w = RotatingJsonl(tmp_path, "flows", flush_s=1.0, rotate_bytes=3 * one, rotate_s=60,
                      clock=clock)
    for i in range(7):
        w.write([make_flow(i)])
        w.flush()
    # 3 records a file: two rotated files, the current one has the seventh.
    assert len(w.rotated) == 2 and all(ROTATED.match(p.name) for p in w.rotated)
    assert [len(lines(p)) for p in w.rotated] == [3, 3] and len(lines(w.path)) == 1
    assert w.rotated[0].name == "flows-20270115T080000Z-0001.jsonl"  # opened at clock time
    clock.t += 61
    w.poll()  # too old: rotated although small
    assert len(w.rotated) == 3 and not w.path.stat().st_size
    clock.t += 120
    w.poll()  # an empty file is not rotated
    assert len(w.rotated) == 3
    w.write([make_flow(7)])
    w.close()
    # A new run keeps the earlier run's current file (rotated away, never truncated).
    w2 = RotatingJsonl(tmp_path, "flows", clock=clock)
    w2.write([make_flow(8)])
    w2.close()
    assert len(w2.rotated) == 1 and [f["flow_id"] for f in lines(w2.rotated[0])] == ["flow-00000007"]
    ids = sorted(f["flow_id"] for p in tmp_path.glob("flows*.jsonl") for f in lines(p))
    assert ids == [f"flow-{i:08d}" for i in range(9)]
    # `mirrorscope query` reads the current and the rotated files together.
    [r] = q.run(tmp_path, ["SELECT count(*), count(DISTINCT flow_id) FROM mirrorscope.flows"])
    assert r.rows == [(9, 9)]


def collect(out: Path, pcap: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_app.cli", "collect", "--pcap", str(pcap),
                           "--embedded", "--out", str(out), "--health-port", "0",
                           "--metrics-port", "0", *extra],
                          capture_output=True, text=True, timeout=120)


def test_collect_embedded_takes_analyze_options(tmp_path):
    # HTTP on port 8002: outside the collector's default payload ports, found as analyze does.
    connect = CORPUS / "sv__http-connect__http-connect-simple__input.pcap"
    p = collect(tmp_path / "a", connect)
    assert p.returncode == 0, p.stderr
    http = lines(tmp_path / "a" / "http.jsonl")
    assert len(http) == 2 and {h["dstport"] for h in http} == {8002}
    # ... unless payload ports are given explicitly.
    p = collect(tmp_path / "b", connect, "--payload-ports", "80")
    assert p.returncode == 0, p.stderr
    assert lines(tmp_path / "b" / "http.jsonl") == []

    p = collect(tmp_path / "c", SAMPLE, "--no-http", "--no-detect", "--tcp-idle-timeout", "1000")
    assert p.returncode == 0, p.stderr
    assert lines(tmp_path / "c" / "http.jsonl") == []
    s = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert s["detectors"] is False and s["http_transactions"] == 0 and s["flows"] == 6
    assert s["frames"] == 56 and s["decoded"] == 56  # the collector's counters
    assert "detectors off (--no-detect)" in p.stderr  # analyze's summary, on stderr
    assert json.loads(p.stdout.splitlines()[-1])["reconciled"]  # the counters on stdout

    # The same records as analyze.
    p = collect(tmp_path / "d", SAMPLE)
    assert p.returncode == 0, p.stderr
    subprocess.run([sys.executable, "-m", "stream_app.cli", "analyze", str(SAMPLE), "--out",
                    str(tmp_path / "e"), "--no-progress"], check=True, capture_output=True)
    dec = msgspec.json.Decoder(FlowRecord)
    live = sorted(dec.decode(x).flow_id for x in (tmp_path / "d" / "flows.jsonl").read_bytes().splitlines())
    ref = sorted(dec.decode(x).flow_id for x in (tmp_path / "e" / "flows.jsonl").read_bytes().splitlines())
    assert live == ref and len(lines(tmp_path / "d" / "http.jsonl")) == 5

    bad = tmp_path / "bad.yaml"
    bad.write_text("port_scan: {no_such_threshold: 3}\n")
    p = collect(tmp_path / "f", SAMPLE, "--detect-config", str(bad))
    assert p.returncode == 2 and "detect_config" in p.stderr and "Traceback" not in p.stderr
