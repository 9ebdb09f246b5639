"""The contracts: committed JSON Schemas match the code, and what we write matches them."""

from __future__ import annotations

import copy
import json

import jsonschema
import msgspec

from schemas import generate
from schemas.records import PACKET_BATCH_VERSION, PacketBatch, PacketRecord
from tests.conftest import CORPUS, run


def test_committed_json_schemas_match_the_code():
    # Meaning, not bytes: structure and descriptions with whitespace collapsed, so a library
    # release that re-indents docstrings (msgspec 0.23 dedents them) does not fail a fresh machine.
    for path, data in generate.rendered().items():
        diff = generate.stale(path, data)
        assert not diff, f"{path.name} is stale (run python -m schemas.generate): " + "; ".join(diff[:10])


def test_the_schema_comparison_ignores_docstring_layout_but_not_what_a_schema_says(tmp_path):
    path = generate.OUT_DIR / "flow_record.json"
    data = generate.rendered()[path]
    schema = json.loads(data)
    name = "FlowRecord"
    doc = schema["$defs"][name]["description"]
    target = tmp_path / path.name

    def compare(mutate) -> list[str]:
        s = copy.deepcopy(schema)
        mutate(s["$defs"][name])
        target.write_text(json.dumps(s))  # compact: no file layout either
        return generate.stale(target, data)

    # the same words, indented as an older msgspec left them
    assert compare(lambda d: d.update(description=doc.replace("\n", "\n    "))) == []
    assert compare(lambda d: d.update(description=doc + " Also counts drops.")) != []
    prop = "community_id"
    assert any(prop in line for line in compare(lambda d: d["properties"].pop(prop)))
    assert any("type" in line for line in compare(
        lambda d: d["properties"][prop].update(type="boolean")))


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
