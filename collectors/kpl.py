"""Kinesis Producer Library (KPL) aggregated records, written and read without protobuf.

Format (amazon-kinesis-producer's aggregation-format.md): the 4 magic bytes F3 89 9A C2, a
protobuf ``AggregatedRecord``, then the MD5 of that protobuf message::

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Tag    { required string key = 1; optional string value = 2; }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;
    }

The Kinesis Client Library and the aws-kinesis-agg package de-aggregate it (the tests read
ours back with aws-kinesis-agg). The encoder is a few varints and length prefixes, which keeps
the protobuf runtime out of the collector.
"""

from __future__ import annotations

import hashlib

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST = 16


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _vlen(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


class Aggregate:
    """One aggregated record being filled: user records of a single shard."""

    __slots__ = ("_keys", "_ehks", "_pk_table", "_ehk_table", "_records", "size", "n_user",
                 "meta", "first_pk", "first_ehk")

    def __init__(self):
        self._keys: dict[str, int] = {}
        self._ehks: dict[str, int] = {}
        self._pk_table: list[bytes] = []
        self._ehk_table: list[bytes] = []
        self._records: list[bytes] = []
        self.size = len(MAGIC) + DIGEST
        self.n_user = 0
        self.meta: list = []  # the caller's bookkeeping per user record
        self.first_pk: str | None = None
        self.first_ehk: str | None = None

    def added_size(self, pk: str, data_len: int, ehk: str | None = None,
                   tags: list[tuple[str, str]] | None = None) -> int:
        """Bytes this aggregate would grow by with one more user record of data_len bytes."""
        extra = 0
        pki = self._keys.get(pk)
        if pki is None:
            pki = len(self._pk_table)
            n = len(pk.encode())
            extra += 1 + _vlen(n) + n
        body = 1 + _vlen(pki) + 1 + _vlen(data_len) + data_len
        if ehk is not None:
            ei = self._ehks.get(ehk)
            if ei is None:
                ei = len(self._ehk_table)
                n = len(ehk.encode())
                extra += 1 + _vlen(n) + n
            body += 1 + _vlen(ei)
        for k, v in tags or ():
            t = 1 + _vlen(len(k.encode())) + len(k.encode())
            if v is not None:
                t += 1 + _vlen(len(v.encode())) + len(v.encode())
            body += 1 + _vlen(t) + t
        return extra + 1 + _vlen(body) + body

    def _encode_record(self, pk, data, ehk, tags):
        extra = b""
        pki = self._keys.get(pk)
        if pki is None:
            pki = len(self._pk_table)
            extra += _ld(1, pk.encode())
        body = b"\x08" + _varint(pki)
        if ehk is not None:
            ei = self._ehks.get(ehk)
            if ei is None:
                ei = len(self._ehk_table)
                extra += _ld(2, ehk.encode())
            body += b"\x10" + _varint(ei)
        body += _ld(3, data)
        for k, v in tags or ():
            tag = _ld(1, k.encode()) + (_ld(2, v.encode()) if v is not None else b"")
            body += _ld(4, tag)
        rec = _ld(3, body)
        return extra + rec, rec, pki, ehk

    def add(self, pk: str, data: bytes, ehk: str | None = None,
            tags: list[tuple[str, str]] | None = None, meta=None) -> int:
        """Append a user record; returns the aggregate's new size in bytes."""
        whole, rec, _, _ = self._encode_record(pk, data, ehk, tags)
        if pk not in self._keys:
            self._keys[pk] = len(self._pk_table)
            self._pk_table.append(_ld(1, pk.encode()))
        if ehk is not None and ehk not in self._ehks:
            self._ehks[ehk] = len(self._ehk_table)
            self._ehk_table.append(_ld(2, ehk.encode()))
        self._records.append(rec)
        self.size += len(whole)
        self.n_user += 1
        self.meta.append(meta)
        if self.first_pk is None:
            self.first_pk, self.first_ehk = pk, ehk
        return self.size

    def serialize(self) -> bytes:
        body = b"".join(self._pk_table) + b"".join(self._ehk_table) + b"".join(self._records)
        return MAGIC + body + hashlib.md5(body).digest()


# -- reading (for tools and tests; consumers normally use the KCL or aws-kinesis-agg) -------

def _read_varint(b: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        if c < 0x80:
            return n, i
        shift += 7


def _fields(b: bytes):
    i = 0
    while i < len(b):
        key, i = _read_varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(b, i)
        elif wt == 2:
            ln, i = _read_varint(b, i)
            v = b[i:i + ln]
            i += ln
        else:
            raise ValueError(f"unexpected wire type {wt}")
        yield f, v


def deaggregate(data: bytes) -> list[tuple[str, str | None, bytes, dict[str, str]]]:
    """(partition key, explicit hash key, data, tags) of each user record; a record that is
    not aggregated comes back as itself with an empty key."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + DIGEST:
        return [("", None, data, {})]
    body = data[len(MAGIC):-DIGEST]
    if hashlib.md5(body).digest() != data[-DIGEST:]:
        raise ValueError("aggregated record: MD5 mismatch")
    pks: list[str] = []
    ehks: list[str] = []
    recs = []
    for f, v in _fields(body):
        if f == 1:
            pks.append(bytes(v).decode())
        elif f == 2:
            ehks.append(bytes(v).decode())
        elif f == 3:
            pki, ehi, payload, tags = 0, None, b"", {}
            for rf, rv in _fields(v):
                if rf == 1:
                    pki = rv
                elif rf == 2:
                    ehi = rv
                elif rf == 3:
                    payload = bytes(rv)
                elif rf == 4:
                    kv = dict(_fields(rv))
                    tags[bytes(kv.get(1, b"")).decode()] = bytes(kv.get(2, b"")).decode()
            recs.append((pki, ehi, payload, tags))
    return [(pks[p], ehks[e] if e is not None else None, d, t) for p, e, d, t in recs]
