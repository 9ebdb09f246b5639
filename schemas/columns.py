"""Column types of the record contracts, shared by the Parquet writer (stream_app/sinks/
parquet.py: Arrow types) and the Athena DDL generator (schemas/athena/generate.py: Hive
types), so both read one mapping and schemas/ needs nothing from stream_app.
(Moved here from stream_app/sinks/parquet.py unchanged.)
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import msgspec


class UnsupportedType(TypeError):
    pass


def _strip_optional(t: Any) -> Any:
    """``X | None`` -> X (every column is nullable anyway)."""
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        raise UnsupportedType(f"union of several types: {t!r}")
    return t


def _resolved_hints(struct_type: type) -> dict[str, Any]:
    return typing.get_type_hints(struct_type)


def logical_type(t: Any) -> tuple:
    """A small type tree shared by the Arrow and the Hive/Athena mappings:
    ("int",) ("float",) ("str",) ("bool",) ("list", elem) ("map", key, value)
    ("struct", ((name, type), ...)) for a nested msgspec Struct (DNS answers, TLS
    certificates: array<struct<...>> in Athena)."""
    t = _strip_optional(t)
    origin = typing.get_origin(t)
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return ("struct", tuple(struct_columns(t)))
    if t is bool:
        return ("bool",)
    if t is int:
        return ("int",)
    if t is float:
        return ("float",)
    if t is str:
        return ("str",)
    if origin is Literal:
        vals = typing.get_args(t)
        if all(isinstance(v, str) for v in vals):
            return ("str",)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            return ("int",)
        raise UnsupportedType(f"mixed Literal: {t!r}")
    if origin in (list, tuple) or t in (list, tuple):
        args = typing.get_args(t)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise UnsupportedType(f"fixed tuple: {t!r}")
        return ("list", logical_type(args[0]))
    if origin is dict:
        k, v = typing.get_args(t)
        return ("map", logical_type(k), logical_type(v))
    raise UnsupportedType(f"no column type for {t!r}")


def struct_columns(struct_type: type) -> list[tuple[str, tuple]]:
    """(column name, logical type) of each field, in the Struct's field order."""
    hints = _resolved_hints(struct_type)
    return [(f.encode_name, logical_type(hints[f.name])) for f in msgspec.structs.fields(struct_type)]
