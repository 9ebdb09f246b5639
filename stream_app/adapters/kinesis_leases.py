"""Kinesis shard leases in Redis: which worker reads which shard.

Shard leases (Redis; every key hash-tagged by app and stream, so one Cluster slot holds them)::

    mk:{<app>:<stream>}:lease:<shard>   owner id, SET NX PX <lease_ms>; renewed every lease/3
    mk:{<app>:<stream>}:workers         sorted set: worker id -> expiry (ms, Redis clock)
    mk:{<app>:<stream>}:done            set: shards read to their end (closed by resharding)

Every round (lease_ms / 3) a worker refreshes its heartbeat in ``workers`` (the members whose
expiry has passed are dropped: they are dead), renews its leases in one pipelined trip (a
compare-and-PEXPIRE script: only the owner's value is extended), and then balances:
``quota = ceil(consumable shards / live workers)``. Over quota it hands shards back: it stops
reading them, writes their last checkpoint and deletes the lease (a compare-and-DEL), so the
next owner resumes from exactly there. Under quota it takes free shards with SET NX PX. A
lease another worker holds now stops its shard at once: the task is cancelled and the
partition's state forgotten. A lease key that has vanished (Redis restarted without its data,
or the renewal came after the expiry and nobody took the shard meanwhile) is set again in the
same script, and the shard goes on with the state it holds in memory. Besides that, every shard
task checks before each batch that its lease was renewed less than a lease ago (minus a
margin), so a worker whose loop stalled stops by itself; the state store's epoch fences a
late snapshot write of a worker that lost a shard anyway, so the state is never corrupted,
only results may be repeated (with the same ids).
"""

from __future__ import annotations


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
