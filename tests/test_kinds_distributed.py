"""Every result kind, distributed as embedded, on real traffic: the capture taken with AWS VPC
Traffic Mirroring itself (sv__vxlan-decoder-03: SSH, DNS and NTP inside VXLAN), replayed by
`mirrorscope collect` into Kafka and processed by `mirrorscope worker` (1 and 2 core
processes), gives on every result topic the records `mirrorscope analyze` writes, by id and
content: flows, and the SSH sessions and DNS transactions once their analyzers are
registered (issue 19). Payload is kept on every port, as analyze reads it."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from schemas.kinds import KINDS, NAMES
from tests.conftest import CORPUS
from tests.services.collector_proc import MIRRORSCOPE
from tests.services.fixtures import kafka_broker  # noqa: F401
from tests.services.kafka_service import create_topic
from tests.test_worker_kafka import Env, assert_same, owns, wait_for

CAPTURE = CORPUS / "sv__vxlan-decoder-03__vxlan.pcap"


@pytest.mark.parametrize("processes", [1, 2])
def test_worker_gives_analyzes_records_of_every_kind_on_an_aws_mirror_capture(
        kafka_broker, redis_db, tmp_path, processes):  # noqa: F811
    ref_dir = tmp_path / "reference"
    subprocess.run([MIRRORSCOPE, "analyze", str(CAPTURE), "--out", str(ref_dir), "--json"],
                   check=True, capture_output=True, timeout=120)
    ref = {k.name: {r[k.id_field]: r for r in map(json.loads, (ref_dir / f"{k.name}.jsonl")
                                                   .read_text().splitlines())}
           for k in KINDS}
    assert len(ref["flows"]) == 13  # SSH, DNS and NTP conversations
    e = Env(kafka_broker.bootstrap, redis_db, uuid.uuid4().hex[:8], tmp_path, processes)
    create_topic(e.bootstrap, e.topic, 4)
    for t in e.results.values():
        create_topic(e.bootstrap, t, 2)
    try:
        w = e.worker("w1")
        w.wait_ready()
        wait_for(lambda: owns(w, 4), "all 4 partitions", workers=e.workers)
        e.replay(CAPTURE, end_marker=True)
        assert_same(e, ref, kinds=NAMES)
    finally:
        for w in e.workers:
            try:
                w.stop(timeout=30)
            except Exception:
                w.kill()
