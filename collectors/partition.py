"""Where a flow's records go: the Kafka partition or the Kinesis shard of its partition key.

Kafka: the collector picks the partition itself, exactly as Kafka's default partitioner would
for the message key: ``toPositive(murmur2(key)) % partitions`` (Java's
org.apache.kafka.common.utils.Utils.murmur2; tests compare with it and with kafka-python's).

Kinesis: a record goes to the shard whose hash-key range holds MD5(partition key) as a 128-bit
number. Partition keys are Unicode strings there, so the flow's partition-key bytes travel
as lowercase hex (at most 90 characters; the limit is 256).
"""

from __future__ import annotations

import bisect
import hashlib
import struct

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c) as an unsigned 32-bit number."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    n4 = length >> 2
    if n4:
        for k in struct.unpack_from("<%dI" % n4, data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            k = (k * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    tail = n4 << 2
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def kinesis_partition_key(key: bytes) -> str:
    return key.hex()


def kinesis_hash(pk: str) -> int:
    """The 128-bit hash key Kinesis derives from a partition key."""
    return int.from_bytes(hashlib.md5(pk.encode()).digest(), "big")


class ShardMap:
    """Open shards of a stream, ordered by their hash-key ranges."""

    def __init__(self, shards: list[dict]):
        open_shards = [s for s in shards
                       if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})]
        open_shards.sort(key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
        self.shard_ids = [s["ShardId"] for s in open_shards]
        self.starts = [int(s["HashKeyRange"]["StartingHashKey"]) for s in open_shards]
        self.ends = [int(s["HashKeyRange"]["EndingHashKey"]) for s in open_shards]
        if not self.shard_ids:
            raise ValueError("the stream has no open shards")

    def __len__(self) -> int:
        return len(self.shard_ids)

    def index_for_hash(self, h: int) -> int:
        return max(0, bisect.bisect_right(self.starts, h) - 1)

    def index_for_key(self, key: bytes) -> int:
        return self.index_for_hash(kinesis_hash(kinesis_partition_key(key)))

    def same_layout(self, other: ShardMap) -> bool:
        return self.shard_ids == other.shard_ids and self.starts == other.starts
