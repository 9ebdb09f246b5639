"""Write (or check) the JSON Schema files under schemas/jsonschema/ from the record types.

    python -m schemas.generate          # rewrite the files
    python -m schemas.generate --check  # exit 1 if a committed file means something else than the
                                        # code (structure and descriptions; not whitespace)
"""

from __future__ import annotations

import argparse
import inspect
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


def _clean_descriptions(node) -> None:
    """Docstrings as inspect.cleandoc leaves them: msgspec 0.23 started dedenting them and older
    releases did not, and the files should not depend on which one made them."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "description" and isinstance(v, str):
                node[k] = inspect.cleandoc(v)
            else:
                _clean_descriptions(v)
    elif isinstance(node, list):
        for v in node:
            _clean_descriptions(v)


def normalised(schema):
    """What a schema means, for comparing two of them: the structure, with each description's
    whitespace collapsed (indentation and line breaks of a docstring are not part of the
    contract; its words are)."""
    if isinstance(schema, dict):
        return {k: (" ".join(v.split()) if k == "description" and isinstance(v, str) else normalised(v))
                for k, v in schema.items()}
    if isinstance(schema, list):
        return [normalised(v) for v in schema]
    return schema


def differences(committed, generated, path: str = "") -> list[str]:
    """Where two normalised schemas differ, as JSON-pointer-like paths."""
    if isinstance(committed, dict) and isinstance(generated, dict):
        out = []
        for k in sorted(set(committed) | set(generated)):
            if k not in committed:
                out.append(f"{path}/{k}: missing from the committed file")
            elif k not in generated:
                out.append(f"{path}/{k}: no longer generated")
            else:
                out += differences(committed[k], generated[k], f"{path}/{k}")
        return out
    if isinstance(committed, list) and isinstance(generated, list) and len(committed) == len(generated):
        return [d for i, (a, b) in enumerate(zip(committed, generated))
                for d in differences(a, b, f"{path}/{i}")]
    return [] if committed == generated else [f"{path or '/'}: {committed!r} != {generated!r}"]


def stale(path: Path, data: bytes) -> list[str]:
    """How a committed schema file differs in meaning from the generated one ([] if not)."""
    if not path.exists():
        return [f"{path.name} is missing"]
    try:
        committed = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        return [f"{path.name} is not JSON: {exc}"]
    return differences(normalised(committed), normalised(orjson.loads(data)))


def render(name: str, typ: type) -> bytes:
    schema = msgspec.json.schema(typ)
    _clean_descriptions(schema)
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
    out_of_date = []
    for path, data in rendered().items():
        if args.check:
            if stale(path, data):
                out_of_date.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    if out_of_date:
        print("stale JSON Schema files (run python -m schemas.generate): " + ", ".join(out_of_date),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
