"""Where partition state lives between owners: Redis (standalone or Cluster, AUTH and TLS by
URL), or memory for tests and embedded use.

Layout, per partition ``name`` (``<group>:<topic>:<partition>``), every key hash-tagged by the
partition so that one partition's keys share a Cluster slot and one script can write them all:

    ms:{name}:epoch   owner epoch, INCR'd by each worker that takes the partition over
    ms:{name}:meta    the Meta of the last snapshot (its offset is the watermark)
    ms:{name}:flows   hash: flow field -> signed flow blob

A snapshot is written by one Lua script, which Redis runs atomically: it checks the epoch
(a worker that lost the partition can no longer write), deletes the ended flows, writes the
changed ones and the meta with its offset, all or nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stream_app.state.partition import Snapshot

log = logging.getLogger(__name__)

_SAVE = """
local cur = redis.call('GET', KEYS[1])
local lost = 0
if not cur then
  -- The store lost its data (a restarted Redis without persistence): we are still the owner,
  -- and the caller sends the whole state next.
  redis.call('SET', KEYS[1], ARGV[1])
  lost = 1
elseif cur ~= ARGV[1] then
  return -1
end
local ndel = tonumber(ARGV[3])
local i = 4
for _ = 1, ndel do
  redis.call('HDEL', KEYS[3], ARGV[i])
  i = i + 1
end
while i < #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('SET', KEYS[2], ARGV[2])
return lost
"""


class Fenced(Exception):
    """Another worker has taken the partition over since this one loaded it."""


class StateLost(Exception):
    """The store had lost the partition's state; the snapshot was written on a fresh state
    and the caller must write the whole state again."""


def keys(name: str) -> tuple[str, str, str]:
    tag = "{" + name + "}"
    return f"ms:{tag}:epoch", f"ms:{tag}:meta", f"ms:{tag}:flows"


@dataclass
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    """redis:// or rediss:// (TLS); user and password in the URL or below."""
    cluster: bool = False
    password: str | None = None
    username: str | None = None
    ssl_ca_certs: str | None = None
    socket_timeout: float = 5.0
    retries: int = 3


def connect(cfg: RedisConfig):
    """A redis-py client that reconnects on its own (with backoff) after Redis restarts."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    kw = dict(socket_timeout=cfg.socket_timeout, socket_connect_timeout=cfg.socket_timeout,
              retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), cfg.retries),
              retry_on_error=[redis.ConnectionError, redis.TimeoutError],
              health_check_interval=15)
    if cfg.password is not None:
        kw["password"] = cfg.password
    if cfg.username is not None:
        kw["username"] = cfg.username
    if cfg.ssl_ca_certs and cfg.url.startswith("rediss://"):
        kw["ssl_ca_certs"] = cfg.ssl_ca_certs
    if cfg.cluster:
        from redis.cluster import RedisCluster
        kw.pop("health_check_interval")
        return RedisCluster.from_url(cfg.url, **kw)
    return redis.Redis.from_url(cfg.url, **kw)


class RedisStore:
    def __init__(self, client):
        self.r = client
        self._save = client.register_script(_SAVE)
        self.round_trips = 0

    def claim(self, name: str) -> int:
        """Take the partition over: later writes by an earlier owner are refused."""
        self.round_trips += 1
        return int(self.r.incr(keys(name)[0]))

    def load(self, name: str) -> tuple[bytes | None, dict[bytes, bytes]]:
        _, meta_k, flows_k = keys(name)
        self.round_trips += 1
        meta = self.r.get(meta_k)
        blobs: dict[bytes, bytes] = {}
        for fld, blob in self.r.hscan_iter(flows_k, count=1000):
            blobs[fld] = blob
        self.round_trips += 1 + len(blobs) // 1000
        return meta, blobs

    def save(self, name: str, epoch: int, snap: Snapshot) -> None:
        args: list = [str(epoch), snap.meta, len(snap.delete), *snap.delete]
        for fld, blob in snap.put.items():
            args.append(fld)
            args.append(blob)
        self.round_trips += 1
        rc = self._save(keys=list(keys(name)), args=args)
        if rc == -1:
            raise Fenced(name)
        if rc == 1:
            raise StateLost(name)

    def drop(self, name: str) -> None:
        self.round_trips += 1
        self.r.delete(*keys(name))


class MemoryStore:
    """The same contract in a dict (tests, and a single worker without Redis)."""

    def __init__(self):
        self.data: dict[str, dict] = {}
        self.round_trips = 0

    def claim(self, name: str) -> int:
        d = self.data.setdefault(name, {"epoch": 0, "meta": None, "flows": {}})
        d["epoch"] += 1
        return d["epoch"]

    def load(self, name: str):
        d = self.data.get(name)
        if d is None:
            return None, {}
        return d["meta"], dict(d["flows"])

    def save(self, name: str, epoch: int, snap: Snapshot) -> None:
        d = self.data.get(name)
        lost = d is None
        if lost:
            d = self.data[name] = {"epoch": epoch, "meta": None, "flows": {}}
        elif d["epoch"] != epoch:
            raise Fenced(name)
        for fld in snap.delete:
            d["flows"].pop(fld, None)
        d["flows"].update(snap.put)
        d["meta"] = snap.meta
        if lost:
            raise StateLost(name)
