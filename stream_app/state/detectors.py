"""The detectors' state (stream_app/core/detectors.py, DetectorState) in Redis, shared by every
worker: a scan's probes are different flows, spread over all partitions, and each worker adds
what it sees to the same per-source sets and counters.

Each operation is one MULTI/EXEC (one round trip), so the count a worker reads back includes
its own addition and no one else's after it: two workers adding the scan's 15th and 16th port
read 15 and 16, and exactly one of them sees the threshold.

Windows are in capture time, but Redis expires keys by the wall clock: a key is kept for as
many wall seconds as its window still has capture seconds to run (at least ``min_ttl``), which
is at least as long as needed whether traffic is live or replayed faster.
"""

from __future__ import annotations

import msgspec

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()


class RedisDetectorState:
    def __init__(self, client, prefix: str = "md", min_ttl: float = 60.0,
                 max_ttl: float = 86400.0):
        self.r = client
        self.prefix = prefix
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.now = 0.0
        self.round_trips = 0

    def _k(self, key: tuple) -> str:
        return self.prefix + ":" + "|".join(str(p) for p in key)

    def _ttl(self, exp: float) -> int:
        return int(min(self.max_ttl, max(self.min_ttl, exp - self.now)) * 1000)

    def _tx(self):
        self.round_trips += 1
        return self.r.pipeline(transaction=True)

    def add_distinct(self, key, member, exp):
        k = self._k(key)
        p = self._tx()
        p.sadd(k, _enc.encode(member))
        p.scard(k)
        p.pexpire(k, self._ttl(exp))
        return int(p.execute()[1])

    def incr(self, key, n, exp):
        k = self._k(key)
        p = self._tx()
        p.incrby(k, n)
        p.pexpire(k, self._ttl(exp))
        return int(p.execute()[0])

    def top_incr(self, key, member, n, k, exp):
        rk = self._k(key)
        p = self._tx()
        p.zincrby(rk, n, _enc.encode(member))
        p.zremrangebyrank(rk, 0, -(k + 1))  # keep the k largest
        p.zrange(rk, 0, -1, withscores=True)
        p.pexpire(rk, self._ttl(exp))
        return {_dec.decode(m): int(s) for m, s in p.execute()[2]}

    def times(self, key, t, keep, exp):
        rk = self._k(key)
        # Times sort by score; text (addresses) by member, as equal scores do in Redis.
        if isinstance(t, str):
            member, score = b"s" + t.encode(), 0
        else:
            member, score = b"f" + repr(float(t)).encode(), t
        p = self._tx()
        p.zadd(rk, {member: score})
        p.zremrangebyrank(rk, 0, -(keep + 1))
        p.zrange(rk, 0, -1)
        p.pexpire(rk, self._ttl(exp))
        return [m[1:].decode() if m[:1] == b"s" else float(m[1:])
                for m in p.execute()[2]]

    def get(self, key):
        self.round_trips += 1
        v = self.r.get(self._k(key))
        return None if v is None else _dec.decode(v)

    def put(self, key, value, exp):
        self.round_trips += 1
        self.r.set(self._k(key), _enc.encode(value), px=self._ttl(exp))

    def once(self, key, exp, now):
        k = self._k(key)
        v = _enc.encode(exp)
        self.round_trips += 1
        if self.r.set(k, v, nx=True, px=self._ttl(exp)):
            return True
        old = self.r.get(k)
        self.round_trips += 1
        if old is not None and _dec.decode(old) > now:
            return False
        self.round_trips += 1
        self.r.set(k, v, px=self._ttl(exp))
        return True

    def expire(self, now):
        # Redis drops keys itself; this only follows capture time for the TTLs above.
        if now > self.now:
            self.now = now
