"""Kinesis shard leases in Redis: which worker reads which shard (the protocol; the consumer
in adapters/kinesis.py runs it). docs/distributed.md ("Shard leases") describes it for
operators.

State (Redis; every key hash-tagged by app and stream, so one Cluster slot holds them)::

    mk:{<app>:<stream>}:lease:<shard>   owner id; SET NX PX <lease_ms>
    mk:{<app>:<stream>}:workers         sorted set: worker id -> heartbeat expiry (ms, Redis clock)
    mk:{<app>:<stream>}:done            set: shards read to their end (closed by resharding)

A round, every lease_ms / 3, per worker:

1. heartbeat (_HEARTBEAT, one script): drop members whose expiry has passed (dead workers),
   add or refresh this worker's, return the live set. A worker that finds itself missing
   although it had registered (Redis lost its data, or it stalled for a lease) waits a whole
   lease before taking any free shard, so that the others can take their own keys back first.
2. renew (_RENEW, one pipelined trip for all held shards): extend a lease only if its key
   still names this worker (1); set it again if it has vanished (2: nobody took it meanwhile,
   else the key would name them); otherwise (0) the shard is another's: stop it at once.
3. balance (``consumable``, ``share``, ``hand_back`` below): with Q = ceil(consumable shards /
   live workers), a worker over Q hands its highest shard ids back (stop reading, last
   checkpoint, then _RELEASE, a compare-and-DEL, so the next owner resumes exactly there); a
   worker under Q takes free shards (no holder) with SET NX PX, in random order.

Invariants and why they hold:

* At most one worker reads a shard at a time: a lease is taken with NX and extended only by
  its holder; a reader also stops by itself when its lease was last renewed 0.9 lease ago
  (its loop stalled), before the key can expire and be taken.
* A late writer cannot corrupt state: the partition state store's epoch (state/store.py,
  claimed at take-over) fences a snapshot written by a worker that lost the shard; at worst
  records are made twice, with the same ids.
* No shard is left unread: a killed worker's leases expire after lease_ms and its heartbeat
  too, so the others' next share includes its shards.
* Order across a reshard: children are consumable only once their parents are in ``done``.
"""

from __future__ import annotations

import math


_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return {added, redis.call('ZRANGE', KEYS[1], 0, -1)}
"""

_RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not cur then
  -- Nobody holds it (Redis lost its data, or our renewal came late): ours again.
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Leases:
    """Synchronous Redis side of the lease protocol (see the module docstring)."""

    def __init__(self, client, app: str, stream: str, owner: str, lease_ms: int):
        self.r = client
        self.owner = owner
        self.lease_ms = int(lease_ms)
        self.prefix = "mk:{" + f"{app}:{stream}" + "}"
        self._hb = client.register_script(_HEARTBEAT)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self.round_trips = 0

    def key(self, shard: str) -> str:
        return f"{self.prefix}:lease:{shard}"

    @property
    def workers_key(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def done_key(self) -> str:
        return f"{self.prefix}:done"

    def heartbeat(self) -> tuple[bool, list[str], set[str]]:
        """(whether this worker was missing from the registry, live workers, finished
        shards)."""
        self.round_trips += 1
        p = self.r.pipeline(transaction=False)
        self._hb(keys=[self.workers_key], args=[self.owner, self.lease_ms], client=p)
        p.smembers(self.done_key)
        (added, live), done = p.execute()
        return bool(added), [_s(w) for w in live], {_s(d) for d in done}

    def deregister(self) -> None:
        self.round_trips += 1
        self.r.zrem(self.workers_key, self.owner)

    def acquire(self, shard: str) -> bool:
        self.round_trips += 1
        return bool(self.r.set(self.key(shard), self.owner, nx=True, px=self.lease_ms))

    def renew(self, shards: list[str]) -> dict[str, int]:
        """Per shard: 1 renewed, 2 taken again (the key had vanished), 0 another's."""
        if not shards:
            return {}
        self.round_trips += 1
        p = self.r.pipeline(transaction=False)
        for s in shards:
            self._renew(keys=[self.key(s)], args=[self.owner, self.lease_ms], client=p)
        return {s: int(ok) for s, ok in zip(shards, p.execute())}

    def release(self, shard: str) -> bool:
        self.round_trips += 1
        return bool(self._release(keys=[self.key(shard)], args=[self.owner]))

    def holders(self, shards: list[str]) -> dict[str, str | None]:
        if not shards:
            return {}
        self.round_trips += 1
        vals = self.r.mget([self.key(s) for s in shards])
        return {s: (_s(v) if v is not None else None) for s, v in zip(shards, vals)}

    def mark_finished(self, shard: str) -> None:
        self.round_trips += 1
        self.r.sadd(self.done_key, shard)

    def forget_finished(self, shards: set[str]) -> None:
        if shards:
            self.round_trips += 1
            self.r.srem(self.done_key, *shards)


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# -- the balancing rules (pure: the consumer's lease round applies them) -----------------------

def consumable(shards: dict[str, dict], finished: set[str]) -> list[str]:
    """Shards that may be read now: not finished, and each parent (ParentShardId,
    AdjacentParentShardId) finished or no longer listed, so that after a split or a merge a
    flow's packets are read in order (the parents to their end first)."""
    out = []
    for sid, sh in shards.items():
        if sid in finished:
            continue
        parents = (sh.get("ParentShardId"), sh.get("AdjacentParentShardId"))
        if all(p is None or p in finished or p not in shards for p in parents):
            out.append(sid)
    return sorted(out)


def share(consumable_shards: int, live_workers: int) -> int:
    """The most shards one worker holds: ceil(consumable / live workers)."""
    return math.ceil(consumable_shards / max(1, live_workers))


def hand_back(active: list[str], quota: int) -> list[str]:
    """Which of a worker's shards to hand back when it holds more than its share: the
    highest ids, so that workers over quota agree without talking."""
    return sorted(active, reverse=True)[:max(0, len(active) - quota)]

