"""Write (or check) the JSON Schema files under schemas/jsonschema/ from the record types.

    python -m schemas.generate          # rewrite the files
    python -m schemas.generate --check  # exit 1 if a committed file differs from the code
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec
import orjson

from schemas.records import SCHEMA_TYPES, PacketRecord, PacketBatch

_ALL_TYPES = (PacketRecord, PacketBatch)

OUT_DIR = Path(__file__).resolve().parent / "jsonschema"


def _title_array_items(schema: dict) -> None:
    """Array-like structs travel as positional arrays; name each position in the schema."""
    for defname, d in schema.get("$defs", {}).items():
        typ = next((t for t in _ALL_TYPES if t.__name__ == defname), None)
        if typ is None or "prefixItems" not in d:
            continue
        for item, field in zip(d["prefixItems"], msgspec.structs.fields(typ)):
            item["title"] = field.name


def render(name: str, typ: type) -> bytes:
    schema = msgspec.json.schema(typ)
    _title_array_items(schema)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$id": f"mirrorscope/{name}.json", **schema}
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def rendered() -> dict[Path, bytes]:
    return {OUT_DIR / f"{name}.json": render(name, typ) for name, typ in SCHEMA_TYPES.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args(argv)
    stale = []
    for path, data in rendered().items():
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    if stale:
        print("stale JSON Schema files (run python -m schemas.generate): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
