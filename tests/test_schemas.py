"""The contracts: committed JSON Schemas match the code, and what we write matches them."""

from __future__ import annotations

import json

import jsonschema
import msgspec

from schemas import generate
from schemas.records import PACKET_BATCH_VERSION, PacketBatch, PacketRecord
from tests.conftest import CORPUS, run


def test_committed_json_schemas_match_the_code():
    for path, data in generate.rendered().items():
        assert path.exists(), f"{path.name} missing: run python -m schemas.generate"
        assert path.read_bytes() == data, f"{path.name} is stale: run python -m schemas.generate"


def test_flow_records_validate_against_the_committed_schema(tmp_path):
    schema = json.loads((generate.OUT_DIR / "flow_record.json").read_text())
    run([CORPUS / "sv__vxlan-decoder-03__vxlan.pcap", CORPUS / "community-id" / "ipv6.pcap"], tmp_path)
    lines = (tmp_path / "out" / "flows.jsonl").read_text().splitlines()
    assert lines
    for line in lines:
        jsonschema.validate(json.loads(line), schema)


def test_packet_batch_round_trips_compactly_on_the_wire():
    rec = PacketRecord(1_700_000_000_123_456_789, 5569041, b"\xac\x1f\x00\xee", 4,
                       b"\x12\xc4\x91\xe0", b"\xac\x1f\x00\xee", 6, 37180, 22, 0x18, 1, 2,
                       100, 100, 48, b"x" * 48, False, False, "ingress")
    batch = PacketBatch(PACKET_BATCH_VERSION, b"key", [rec] * 3, "collector-1", 9)
    wire = msgspec.msgpack.encode(batch)
    assert msgspec.msgpack.decode(wire, type=PacketBatch) == batch
    # Array-encoded: a record costs its values, not its field names.
    assert len(msgspec.msgpack.encode(rec)) < 64 + len(rec.payload)
    schema = json.loads((generate.OUT_DIR / "packet_batch.json").read_text())
    jsonschema.validate(json.loads(msgspec.json.encode(batch)), schema)
