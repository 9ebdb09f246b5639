"""Declared metrics (stream_app/runtime/metrics.py): one definition per metric, every family
in every scrape from the start (at zero), the same for both workers, every counter the code
keeps declared, and docs/distributed.md's table saying exactly what is declared."""

from __future__ import annotations

import re
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families

from stream_app.adapters.kinesis import ConsumerConfig, KinesisConsumer
from stream_app.core.processor import CoreConfig
from stream_app.runtime.metrics import METRICS, WorkerMetrics
from stream_app.runtime.runtime import Runtime
from stream_app.state.codec import Codec
from stream_app.state.store import MemoryStore

ROOT = Path(__file__).resolve().parents[1]


def declared(workers: str) -> set[str]:
    return {m.stat for m in METRICS if m.stat is not None and m.workers == workers}


def counted(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern + r'\["([a-z_]+)"\]', path.read_text()))


def test_names_are_declared_once():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    assert all(m.kind in ("counter", "gauge") and m.help for m in METRICS)


def test_every_counter_the_code_keeps_is_declared():
    runtime_keys = set()
    for p in [*(ROOT / "stream_app" / "runtime").glob("*.py"),
              ROOT / "stream_app" / "adapters" / "faust_app.py"]:
        runtime_keys |= counted(p, r"(?:self|rt|runtime|o)\.stats") | counted(p, r"\bstats")
    kinesis_keys = counted(ROOT / "stream_app" / "adapters" / "kinesis.py", r"self\.stats")
    kinesis_keys |= counted(ROOT / "stream_app" / "adapters" / "kinesis.py", r"\bst")
    assert "batches" in runtime_keys and "undecodable" in kinesis_keys  # the scan works
    assert runtime_keys - declared("all") == set()
    assert kinesis_keys - declared("kinesis") == set()


def _scrape(metrics: WorkerMetrics) -> dict[str, tuple[str, list]]:
    out = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        if fam.name.startswith("mirrorscope_"):
            out[fam.name] = (fam.type, fam.samples)
    return out


def test_every_family_is_in_the_first_scrape_at_zero_in_both_workers():
    rt = Runtime(MemoryStore(), Codec(b"k"), CoreConfig(detect=None))
    kafka = _scrape(WorkerMetrics(rt, lambda: 0))
    consumer = KinesisConsumer(ConsumerConfig(stream="s"), rt, None,
                               redis.Redis(port=1), None)  # not connected: nothing is called
    kinesis = _scrape(WorkerMetrics(rt, lambda: 0, kinesis=consumer))
    for m in METRICS:
        if m.workers == "all":
            assert kafka[m.name][0] == m.kind and kinesis[m.name][0] == m.kind
        else:
            assert m.name not in kafka and kinesis[m.name][0] == m.kind
    assert set(kinesis) == {m.name for m in METRICS}
    for name, (kind, samples) in kinesis.items():
        if name == "mirrorscope_worker_ready":
            assert [s.value for s in samples] == [1.0]
        else:  # labelled families have no series yet; the others are at zero
            assert all(s.value == 0 for s in samples), name


def test_a_counter_reads_the_runtime():
    rt = Runtime(MemoryStore(), Codec(b"k"), CoreConfig(detect=None))
    rt.stats["batches_failed"] += 2
    rt.set_lag("tp", 7)
    m = _scrape(WorkerMetrics(rt, lambda: 5))
    assert m["mirrorscope_worker_batches_failed"][1][0].value == 2
    assert m["mirrorscope_worker_redis_round_trips"][1][0].value == 5
    assert [(s.labels, s.value) for s in m["mirrorscope_worker_consumer_lag"][1]] == \
        [({"partition": "tp"}, 7)]


def test_the_docs_table_is_the_declaration():
    text = (ROOT / "docs" / "distributed.md").read_text()
    rows = re.findall(r"^\| `(mirrorscope_[a-z_]+?)(?:_total)?(?:\{[a-z,]+\})?` \| (\w+) \| "
                      r"([\w-]+) \|", text, re.M)
    assert rows, "no metric table in docs/distributed.md"
    want = [(m.name, m.kind, "both" if m.workers == "all" else "kinesis-worker")
            for m in METRICS]
    assert sorted(rows) == sorted(want)
