"""Shared test helpers: where the public corpus is, and running the analyzer on captures."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest

from schemas.records import FlowRecord
from tests.services.fixtures import redis_db, redis_server  # noqa: F401  (Redis for every test under tests/)
from stream_app.core.flowtable import FlowConfig
from stream_app.adapters.embedded import analyze

# With CI set, a skipped test fails the run (tests/ci_guard.py).
pytest_plugins = ["tests.ci_guard"]

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
SAMPLE = ROOT / "docs" / "samples" / "mirror-lab-http.pcap"

# Timeouts longer than any corpus capture: one record per 5-tuple, as tshark counts them.
NO_TIMEOUTS = FlowConfig(idle_timeout=1e9, tcp_idle_timeout=1e9, active_timeout=1e9, close_linger=1e9)


def corpus_files(pattern: str = "**/*") -> list[Path]:
    files = sorted(p for p in CORPUS.glob(pattern)
                   if p.is_file() and p.suffix not in (".md", ".json"))
    assert files, f"no corpus files under {CORPUS} (it is ../shared/corpus from the repo root)"
    return files


def run(paths, tmp_path: Path, config: FlowConfig | None = None, fast: bool = True):
    """Analyze; returns (AnalyzeResult, list of FlowRecord decoded strictly from flows.jsonl)."""
    out = tmp_path / "out"
    if out.exists():
        shutil.rmtree(out)
    res = analyze([Path(p) for p in paths], out, config, fast=fast)
    dec = msgspec.json.Decoder(FlowRecord)
    flows = [dec.decode(line) for line in (out / "flows.jsonl").read_bytes().splitlines()]
    return res, flows


@pytest.fixture
def tshark() -> str:
    exe = shutil.which("tshark")
    assert exe, "tshark is required (Debian package tshark; .ci/setup.sh installs it)"
    return exe


@pytest.fixture(scope="module")
def moto():
    """A real moto server for one test module (tests.sink_helpers.Moto: it can also be paused
    to make the endpoint unreachable)."""
    from tests.sink_helpers import Moto
    m = Moto().start()
    yield m
    m.stop()
