"""Record files for S3: Parquet (pyarrow) or gzip JSON lines, from and back to msgspec Structs.

Pure: bytes in, bytes out, no I/O. The Arrow schema comes from the record type itself
(int -> int64, float -> double, str/Literal -> string, bool -> bool, list[str] -> list<string>,
dict[str, int] -> map<string, int64>; every column nullable), so a field added to a contract
reaches the files without a second list to keep in step. The Athena DDL (schemas/athena/) is
generated from the same mapping.
"""

from __future__ import annotations

import gzip
import io
from typing import Any

import msgspec

from schemas.columns import UnsupportedType, logical_type, struct_columns  # noqa: F401

FORMATS = ("parquet", "jsonl.gz")
PARQUET_COMPRESSION = "zstd"  # what terraform/modules/storage/tables.tf declares


def _arrow(lt: tuple):
    import pyarrow as pa
    kind = lt[0]
    if kind == "int":
        return pa.int64()
    if kind == "float":
        return pa.float64()
    if kind == "str":
        return pa.string()
    if kind == "bool":
        return pa.bool_()
    if kind == "list":
        return pa.list_(_arrow(lt[1]))
    if kind == "map":
        return pa.map_(_arrow(lt[1]), _arrow(lt[2]))
    if kind == "struct":
        return pa.struct([pa.field(n, _arrow(t), nullable=True) for n, t in lt[1]])
    raise UnsupportedType(repr(lt))


_SCHEMAS: dict[type, Any] = {}


def arrow_schema(struct_type: type):
    import pyarrow as pa
    s = _SCHEMAS.get(struct_type)
    if s is None:
        s = pa.schema([pa.field(name, _arrow(lt), nullable=True)
                       for name, lt in struct_columns(struct_type)])
        _SCHEMAS[struct_type] = s
    return s


def _map_columns(struct_type: type) -> list[str]:
    return [name for name, lt in struct_columns(struct_type) if lt[0] == "map"]


def encode_parquet(records: list, struct_type: type) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = msgspec.to_builtins(records)
    maps = _map_columns(struct_type)
    if maps:  # Arrow takes a map as a list of (key, value) pairs
        for r in rows:
            for m in maps:
                if r.get(m) is not None:
                    r[m] = list(r[m].items())
    table = pa.Table.from_pylist(rows, schema=arrow_schema(struct_type))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=PARQUET_COMPRESSION)
    return buf.getvalue()


def decode_parquet(data: bytes | Any, struct_type: type) -> list:
    """Parquet bytes (or a pyarrow Table) -> records of ``struct_type``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = data if isinstance(data, pa.Table) else pq.read_table(io.BytesIO(data))
    return table_to_records(table, struct_type)


def table_to_records(table, struct_type: type) -> list:
    rows = table.to_pylist()
    maps = _map_columns(struct_type)
    if maps:
        for r in rows:
            for m in maps:
                if r.get(m) is not None:
                    r[m] = dict(r[m])
    return msgspec.convert(rows, list[struct_type])


def encode_jsonl_gz(records: list, struct_type: type | None = None) -> bytes:
    enc = msgspec.json.Encoder()
    buf = bytearray()
    for r in records:
        enc.encode_into(r, buf, -1)
        buf += b"\n"
    # mtime=0: the same records always give the same bytes (replays overwrite identically)
    return gzip.compress(bytes(buf), compresslevel=6, mtime=0)


def decode_jsonl_gz(data: bytes, struct_type: type) -> list:
    dec = msgspec.json.Decoder(struct_type)
    return [dec.decode(line) for line in gzip.decompress(data).splitlines() if line]


def encode(records: list, struct_type: type, fmt: str) -> bytes:
    if fmt == "parquet":
        return encode_parquet(records, struct_type)
    if fmt == "jsonl.gz":
        return encode_jsonl_gz(records, struct_type)
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def decode(data: bytes, struct_type: type, fmt: str) -> list:
    if fmt == "parquet":
        return decode_parquet(data, struct_type)
    if fmt == "jsonl.gz":
        return decode_jsonl_gz(data, struct_type)
    raise ValueError(f"unknown format {fmt!r}")


def extension(fmt: str) -> str:
    return {"parquet": ".parquet", "jsonl.gz": ".jsonl.gz"}[fmt]
