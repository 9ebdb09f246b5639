"""Where batches go: Kafka, Kinesis, the stream core in process (embedded), or nowhere (null).

A publisher never blocks the packet path (unless asked to, for capture replays): it keeps at
most ``buffer.max_bytes`` of encoded batches waiting for the destination, and drops what
exceeds it, counted by reason in Stats.publish_dropped and logged (rate-limited). Deliveries
and failures are reported by the client libraries' threads into a deque that the packet
loop drains in ``poll()``, so every counter is written by one thread only.

One Kafka message / one Kinesis user record = msgspec.msgpack.encode(PacketBatch(...)).
"""

from __future__ import annotations

import collections
import logging
import threading
import time

import msgspec

from collectors.kafka_auth import KafkaSecurity, region_from_env
from collectors.partition import ShardMap, kafka_partition, kinesis_hash, kinesis_partition_key
from collectors.stats import Stats
from schemas.records import PACKET_BATCH_VERSION, PacketBatch

log = logging.getLogger("mirrorscope.collect.publish")

VNI_HEADER = "mirrorscope.vni"
LOSS_LOG_INTERVAL_S = 10.0


class PublisherNotReady(Exception):
    """The destination cannot be reached yet (the caller retries)."""


class LossLog:
    """Logs dropped records at most once per interval per reason, with the count since."""

    def __init__(self, logger: logging.Logger, interval: float = LOSS_LOG_INTERVAL_S):
        self.log = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._since: collections.Counter = collections.Counter()

    def drop(self, reason: str, records: int, detail: str = "") -> None:
        self._since[reason] += records
        now = time.monotonic()
        if now - self._last.get(reason, -1e9) >= self.interval:
            self._last[reason] = now
            self.log.warning("records dropped: %s", reason, extra={
                "reason": reason, "records": self._since[reason], "detail": detail})
            self._since[reason] = 0


def marker_keys(partitions: int, partition_for) -> dict[int, bytes]:
    """A key per partition that routes to it (found by trying; a few per partition)."""
    out: dict[int, bytes] = {}
    i = 0
    while len(out) < partitions and i < 1000 * partitions:
        k = b"mirrorscope-end-%d" % i
        out.setdefault(partition_for(k), k)
        i += 1
    return out


class Publisher:
    """The interface the pipeline uses. ``partitions``/``partition_for`` define the layout;
    ``layout_version`` changes when it does."""

    name = "base"
    partitions = 1
    layout_version = 0
    ready = False

    def __init__(self, stats: Stats, collector_id: str, enricher=None):
        self.stats = stats
        self.collector_id = collector_id
        self.enricher = enricher
        self._enc = msgspec.msgpack.Encoder()
        self.loss = LossLog(log)
        self._seq = 0
        self._end_ns = 0

    def core_stats(self) -> dict | None:
        """The in-process core's counters (embedded mode only), for the summary."""
        return None

    def start(self) -> None:
        self.ready = True

    def partition_for(self, key: bytes) -> int:
        return 0

    def encode(self, key: bytes, records: list) -> bytes:
        self._seq += 1
        return self._enc.encode(PacketBatch(PACKET_BATCH_VERSION, key, records,
                                            self.collector_id, self._seq, self._end_ns))

    def submit_end(self, end_ns: int) -> None:
        """Send the end-of-capture marker (PacketBatch.end_ns) to every partition, after
        everything submitted before it. Each goes under a key that routes to its partition,
        so the layout's own routing (murmur2, shard hash ranges) needs no special case."""
        self._end_ns = end_ns
        try:
            for p, key in marker_keys(self.partitions, self.partition_for).items():
                self.submit(p, key, [], 0, block=True)
        finally:
            self._end_ns = 0

    def vni_meta(self, records: list) -> bytes | None:
        if self.enricher is None:
            return None
        return self.enricher.header_for({r.vni for r in records})

    def drop(self, reason: str, n: int, detail: str = "") -> None:
        self.stats.publish_dropped[reason] += n
        self.loss.drop(reason, n, detail)

    def submit(self, p: int, key: bytes, records: list, est_bytes: int, block: bool = False) -> None:
        raise NotImplementedError

    def poll(self, now: float) -> None:
        """Reap completions, refresh the layout; called often by the packet loop."""

    def inflight_records(self) -> int:
        return 0

    def inflight_bytes(self) -> int:
        return 0

    def flush(self, timeout: float) -> None:
        """Deliver everything submitted, waiting at most ``timeout`` seconds."""

    def close(self, timeout: float = 0.0) -> None:
        """Give up on what is still undelivered (counted as ``shutdown``) and release."""


class NullPublisher(Publisher):
    """Counts batches as published at once (benchmarks; dry runs). Encodes them unless told
    not to, so its cost stays comparable with a real destination's."""

    name = "null"

    def __init__(self, stats: Stats, collector_id: str, partitions: int = 16, encode: bool = True,
                 enricher=None):
        super().__init__(stats, collector_id, enricher)
        self.partitions = partitions
        self._encode = encode

    def partition_for(self, key: bytes) -> int:
        return kafka_partition(key, self.partitions)

    def submit(self, p, key, records, est_bytes, block=False):
        st = self.stats
        if self._encode:
            st.bytes_published += len(self.encode(key, records))
        st.published += len(records)
        st.batches_published += 1


# -- Kafka ----------------------------------------------------------------------------------

class KafkaPublisher(Publisher):
    """kafka-python producer: acks=all, idempotent, compressed; the collector picks the
    partition (murmur2 of the key, as Kafka's default partitioner would)."""

    name = "kafka"

    def __init__(self, cfg, buffer_max_bytes: int, stats: Stats, collector_id: str, enricher=None):
        super().__init__(stats, collector_id, enricher)
        self.cfg = cfg
        self.buffer_max = buffer_max_bytes
        self.producer = None
        self._done: collections.deque = collections.deque()
        self._inflight_bytes = 0
        self._inflight_records = 0
        self._closing = False
        self._next_meta = 0.0

    def _producer_config(self) -> dict:
        c = self.cfg
        acks = {"all": "all", "1": 1, "0": 0, -1: "all", 1: 1, 0: 0}[c.acks]
        conf = dict(
            bootstrap_servers=c.bootstrap.split(","),
            acks=acks,
            compression_type=None if c.compression == "none" else c.compression,
            linger_ms=c.linger_ms,
            batch_size=c.batch_size,
            max_request_size=c.max_request_size,
            retries=c.retries,
            retry_backoff_ms=c.retry_backoff_ms,
            request_timeout_ms=c.request_timeout_ms,
            reconnect_backoff_max_ms=c.reconnect_backoff_max_ms,
            delivery_timeout_ms=max(c.delivery_timeout_ms, c.request_timeout_ms + c.linger_ms),
            max_block_ms=int(c.metadata_timeout_s * 1000),
            bootstrap_timeout_ms=int(c.metadata_timeout_s * 1000),
            client_id=c.client_id or f"mirrorscope-collector-{self.collector_id}",
        )
        # One reading of the security settings for every Kafka client (MSK IAM, SCRAM, TLS).
        conf.update(KafkaSecurity(
            protocol=c.security_protocol, mechanism=c.sasl_mechanism,
            username=c.sasl_plain_username, password=c.sasl_plain_password, cafile=c.ssl_cafile,
            certfile=c.ssl_certfile, keyfile=c.ssl_keyfile, key_password=c.ssl_password,
            check_hostname=c.ssl_check_hostname, region=region_from_env()).kafka_python())
        return conf

    def start(self) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            if self.producer is None:
                self.producer = KafkaProducer(**self._producer_config())
            parts = self.producer.partitions_for(self.cfg.topic)
        except KafkaError as exc:
            raise PublisherNotReady(f"Kafka {self.cfg.bootstrap}: {exc}") from exc
        if not parts:
            raise PublisherNotReady(f"Kafka topic {self.cfg.topic} has no partitions")
        self.partitions = len(parts)
        # From now on never wait for metadata in the packet path: the topic's is cached.
        self.producer.config["max_block_ms"] = 0
        self.ready = True
        log.info("publishing to Kafka", extra={"bootstrap": self.cfg.bootstrap,
                                               "topic": self.cfg.topic,
                                               "partitions": self.partitions})

    def partition_for(self, key: bytes) -> int:
        return kafka_partition(key, self.partitions)

    def submit(self, p, key, records, est_bytes, block=False):
        n = len(records)
        data = self.encode(key, records)
        size = len(data)
        if self._inflight_bytes + size > self.buffer_max:
            if block:
                while self._inflight_bytes + size > self.buffer_max and self._inflight_bytes:
                    time.sleep(0.002)
                    self.poll(time.monotonic())
            else:
                self.drop("buffer_full", n, f"{self._inflight_bytes} bytes waiting for Kafka")
                return
        headers = None
        meta = self.vni_meta(records)
        if meta is not None:
            headers = [(VNI_HEADER, meta)]
        from kafka.errors import KafkaError, MessageSizeTooLargeError
        try:
            fut = self.producer.send(self.cfg.topic, value=data, key=key, partition=p,
                                     headers=headers)
        except MessageSizeTooLargeError as exc:
            self.stats.publish_errors += 1
            self.drop("too_large", n, str(exc))
            return
        except (KafkaError, AssertionError, ValueError) as exc:
            self.stats.publish_errors += 1
            self.drop("delivery_failed", n, str(exc))
            return
        self._inflight_bytes += size
        self._inflight_records += n
        done = self._done
        t0 = time.monotonic()
        fut.add_callback(lambda _md, n=n, size=size: done.append((True, n, size, None, t0)))
        fut.add_errback(lambda exc, n=n, size=size: done.append((False, n, size, exc, t0)))

    def poll(self, now: float) -> None:
        done = self._done
        st = self.stats
        while done:
            ok, n, size, exc, t0 = done.popleft()
            self._inflight_bytes -= size
            self._inflight_records -= n
            if ok:
                st.published += n
                st.batches_published += 1
                st.bytes_published += size
                st.publish_latency_ms_sum += (now - t0) * 1000.0
                st.publish_latency_count += 1
            else:
                st.publish_errors += 1
                self.drop("shutdown" if self._closing else "delivery_failed", n,
                          f"{type(exc).__name__}: {exc}")
        if now >= self._next_meta and self.producer is not None:
            self._next_meta = now + 30.0
            try:
                parts = self.producer.partitions_for(self.cfg.topic)
            except Exception:
                parts = None
            if parts and len(parts) != self.partitions:
                log.info("Kafka topic partitions changed", extra={
                    "topic": self.cfg.topic, "before": self.partitions, "after": len(parts)})
                self.partitions = len(parts)
                self.layout_version += 1

    def inflight_records(self) -> int:
        return self._inflight_records

    def inflight_bytes(self) -> int:
        return self._inflight_bytes

    def flush(self, timeout: float) -> None:
        if self.producer is None:
            return
        from kafka.errors import KafkaTimeoutError
        try:
            self.producer.flush(timeout=timeout)
        except KafkaTimeoutError:
            log.warning("Kafka flush timed out", extra={"records": self._inflight_records})
        self.poll(time.monotonic())

    def close(self, timeout: float = 0.0) -> None:
        if self.producer is None:
            return
        self._closing = True
        try:
            self.producer.close(timeout=timeout)
        except Exception as exc:  # pragma: no cover - close must not raise into shutdown
            log.warning("Kafka producer close: %s", exc)
        deadline = time.monotonic() + 5.0
        while self._inflight_records and time.monotonic() < deadline:
            self.poll(time.monotonic())
            time.sleep(0.01)
        self.poll(time.monotonic())
        if self._inflight_records:  # futures that never completed
            self.drop("shutdown", self._inflight_records, "unresolved at close")
            self._inflight_records = 0
            self._inflight_bytes = 0


# -- Kinesis --------------------------------------------------------------------------------

class _Agg:
    __slots__ = ("shard", "data", "records", "attempts", "created", "not_before", "user_records",
                 "pk", "ehk")

    def __init__(self, shard: int, data: bytes, records: int, pk: str, ehk: str, user: int):
        self.shard = shard
        self.data = data
        self.records = records
        self.user_records = user
        self.attempts = 0
        self.created = time.monotonic()
        self.not_before = 0.0
        self.pk = pk
        self.ehk = ehk


class KinesisPublisher(Publisher):
    """PutRecords of KPL-aggregated records: each Kinesis record aggregates PacketBatch user
    records of ONE shard (<= max_record_bytes), with ExplicitHashKey = the hash of its first
    user record's partition key (inside that shard's range); each request holds <= 500
    records and <= max_request_bytes. Failed entries are retried with exponential backoff."""

    name = "kinesis"

    def __init__(self, cfg, buffer_max_bytes: int, linger_s: float, stats: Stats,
                 collector_id: str, enricher=None, client=None):
        super().__init__(stats, collector_id, enricher)
        self.cfg = cfg
        self.buffer_max = buffer_max_bytes
        self.linger = linger_s
        self.client = client
        self.shards: ShardMap | None = None
        self._aggs: dict[int, object] = {}
        self._agg_first: dict[int, float] = {}
        self._queue: collections.deque[_Agg] = collections.deque()
        self._cond = threading.Condition()
        self._done: collections.deque = collections.deque()
        self._threads: list[threading.Thread] = []
        self._stop = False
        self._queued_bytes = 0  # sealed, not yet accepted (queue + in requests); under _cond
        self._queued_records = 0
        self._open_records = 0  # in unsealed aggregates (main thread only)
        self._open_bytes = 0
        self._new_map: ShardMap | None = None
        self._refresh_now = threading.Event()
        self._errors = 0  # PutRecords errors, counted by the sender threads under _cond
        self._errors_seen = 0

    def _make_client(self):
        import os

        import boto3
        from botocore.config import Config
        return boto3.client(
            "kinesis", region_name=self.cfg.region or os.environ.get("AWS_REGION"),
            endpoint_url=self.cfg.endpoint_url,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5,
                          read_timeout=30, max_pool_connections=max(4, self.cfg.senders * 2)))

    def _list_shards(self) -> ShardMap:
        shards = []
        kw = {"StreamName": self.cfg.stream}
        while True:
            resp = self.client.list_shards(**kw)
            shards.extend(resp.get("Shards", []))
            tok = resp.get("NextToken")
            if not tok:
                return ShardMap(shards)
            kw = {"NextToken": tok}

    def start(self) -> None:
        try:
            if self.client is None:
                self.client = self._make_client()
            self.shards = self._list_shards()
        except Exception as exc:
            raise PublisherNotReady(f"Kinesis stream {self.cfg.stream}: {exc}") from exc
        self.partitions = len(self.shards)
        t = threading.Thread(target=self._refresher, name="kinesis-shards", daemon=True)
        t.start()
        for i in range(self.cfg.senders):
            t = threading.Thread(target=self._sender, name=f"kinesis-sender-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self.ready = True
        log.info("publishing to Kinesis", extra={"stream": self.cfg.stream,
                                                 "shards": self.partitions})

    def partition_for(self, key: bytes) -> int:
        return self.shards.index_for_key(key)

    # main thread ---------------------------------------------------------------------------
    def submit(self, p, key, records, est_bytes, block=False):
        from collectors.kpl import Aggregate
        n = len(records)
        data = self.encode(key, records)
        pk = kinesis_partition_key(key)
        tags = None
        meta = self.vni_meta(records)
        if meta is not None:
            tags = [(VNI_HEADER, meta.decode())]
        agg = self._aggs.get(p)
        limit = self.cfg.max_record_bytes
        if agg is not None and agg.size + agg.added_size(pk, len(data), None, tags) > limit:
            self._seal(p, block)
            agg = None
        if agg is None:
            agg = self._aggs[p] = Aggregate()
            self._agg_first[p] = time.monotonic()
            self._open_bytes += agg.size
        if agg.size + agg.added_size(pk, len(data), None, tags) > self.cfg.max_record_bytes:
            self.stats.publish_errors += 1
            self.drop("too_large", n, f"batch of {len(data)} bytes")
            return
        before = agg.size
        agg.add(pk, data, None, tags, meta=n)
        self._open_records += n
        self._open_bytes += agg.size - before

    def _seal(self, p: int, block: bool = False) -> None:
        agg = self._aggs.pop(p, None)
        self._agg_first.pop(p, None)
        if agg is None:
            return
        if not agg.n_user:
            self._open_bytes -= agg.size
            return
        n = sum(agg.meta)
        data = agg.serialize()
        self._open_records -= n
        self._open_bytes -= agg.size
        ehk = str(kinesis_hash(agg.first_pk))
        item = _Agg(p, data, n, agg.first_pk, ehk, agg.n_user)
        while True:
            with self._cond:
                fits = self._queued_bytes + len(data) <= self.buffer_max or not self._queued_bytes
                if fits:
                    self._queued_bytes += len(data)
                    self._queued_records += n
                    self._queue.append(item)
                    self._cond.notify()
                    return
                full = self._queued_bytes
            if not block:
                self.drop("buffer_full", n, f"{full} bytes waiting for Kinesis")
                return
            time.sleep(0.005)
            self.poll(time.monotonic(), seal=False)

    def poll(self, now: float, seal: bool = True) -> None:
        if seal:
            deadline = now - self.linger
            for p, t in list(self._agg_first.items()):
                if t <= deadline:
                    self._seal(p)
        done = self._done
        st = self.stats
        errors = self._errors
        st.publish_errors += errors - self._errors_seen
        self._errors_seen = errors
        while done:
            ok, item, reason = done.popleft()
            if ok:
                st.published += item.records
                st.batches_published += item.user_records
                st.bytes_published += len(item.data)
                st.publish_latency_ms_sum += (now - item.created) * 1000.0
                st.publish_latency_count += 1
            else:
                self.drop(reason, item.records)
        new = self._new_map
        if new is not None:  # found by the refresher thread
            self._new_map = None
            log.info("Kinesis shards changed", extra={"before": len(self.shards),
                                                      "after": len(new)})
            for p in list(self._aggs):
                self._seal(p)
            self.shards = new
            self.partitions = len(new)
            self.layout_version += 1

    def _refresher(self) -> None:
        """Re-reads the shard map every shard_refresh_s, and soon after a PutRecords error or
        a record that landed on another shard; never in the packet path."""
        while not self._stop:
            self._refresh_now.wait(self.cfg.shard_refresh_s)
            if self._stop:
                return
            self._refresh_now.clear()
            try:
                new = self._list_shards()
            except Exception as exc:
                log.warning("ListShards failed: %s", exc)
                time.sleep(1.0)
                continue
            if not new.same_layout(self.shards):
                self._new_map = new
            time.sleep(1.0)  # at most one refresh a second

    def inflight_records(self) -> int:
        return self._open_records + self._queued_records

    def inflight_bytes(self) -> int:
        return self._open_bytes + self._queued_bytes

    def flush(self, timeout: float) -> None:
        for p in list(self._aggs):
            self._seal(p)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(time.monotonic())
            with self._cond:
                if not self._queued_records:
                    break
            time.sleep(0.01)
        self.poll(time.monotonic())

    def close(self, timeout: float = 0.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._refresh_now.set()
        deadline = time.monotonic() + max(timeout, 1.0)
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self.poll(time.monotonic(), seal=False)
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
            for item in left:
                self._queued_records -= item.records
                self._queued_bytes -= len(item.data)
            # Taken by a sender whose PutRecords call has not returned: given up on too.
            in_call = self._queued_records
            self._queued_records = 0
            self._queued_bytes = 0
        for item in left:
            self.drop("shutdown", item.records)
        if in_call:
            self.drop("shutdown", in_call, "PutRecords call still running at shutdown")
        for p in list(self._aggs):
            agg = self._aggs.pop(p)
            n = sum(agg.meta)
            self._open_records -= n
            self._open_bytes -= agg.size
            self.drop("shutdown", n)

    # sender threads ------------------------------------------------------------------------
    def _take(self) -> list[_Agg] | None:
        """Up to one request's worth of sealed aggregates that are due (under _cond)."""
        with self._cond:
            while True:
                if self._stop and not self._queue:
                    return None
                now = time.monotonic()
                batch: list[_Agg] = []
                size = 0
                skipped: list[_Agg] = []
                while self._queue and len(batch) < self.cfg.max_request_records:
                    it = self._queue[0]
                    if it.not_before > now and not self._stop:
                        skipped.append(self._queue.popleft())
                        continue
                    entry = len(it.data) + len(it.pk)
                    if batch and size + entry > self.cfg.max_request_bytes:
                        break
                    batch.append(self._queue.popleft())
                    size += entry
                for it in reversed(skipped):
                    self._queue.appendleft(it)
                if batch:
                    return batch
                if self._stop and self._queue and all(i.not_before > now for i in self._queue):
                    # shutting down: retry the waiting ones now rather than sleep past the deadline
                    for i in self._queue:
                        i.not_before = 0.0
                    continue
                wait = 0.5
                if skipped:
                    wait = max(0.001, min(i.not_before for i in skipped) - now)
                self._cond.wait(wait)

    def _finish(self, item: _Agg, ok: bool, reason: str = "") -> None:
        with self._cond:
            self._queued_bytes -= len(item.data)
            self._queued_records -= item.records
            self._cond.notify_all()
        self._done.append((ok, item, reason))

    def _retry(self, item: _Agg, why: str) -> None:
        item.attempts += 1
        if item.attempts > self.cfg.max_retries:
            self._finish(item, False, "delivery_failed")
            log.warning("Kinesis record given up after retries", extra={
                "attempts": item.attempts, "error": why, "records": item.records})
            return
        backoff = min(self.cfg.max_backoff_ms, self.cfg.retry_backoff_ms * (2 ** (item.attempts - 1)))
        item.not_before = time.monotonic() + backoff / 1000.0
        with self._cond:
            self._queue.append(item)
            self._cond.notify()

    def _sender(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            entries = [{"Data": it.data, "PartitionKey": it.pk, "ExplicitHashKey": it.ehk}
                       for it in batch]
            try:
                resp = self.client.put_records(StreamName=self.cfg.stream, Records=entries)
            except Exception as exc:
                with self._cond:
                    self._errors += 1
                self._refresh_now.set()
                log.debug("PutRecords failed: %s", exc)
                for it in batch:
                    self._retry(it, f"{type(exc).__name__}: {exc}")
                continue
            for it, res in zip(batch, resp.get("Records", [])):
                if res.get("ErrorCode"):
                    with self._cond:
                        self._errors += 1
                    self._retry(it, f"{res.get('ErrorCode')}: {res.get('ErrorMessage')}")
                else:
                    if self.shards is not None and res.get("ShardId") != self.shards.shard_ids[it.shard]:
                        self._refresh_now.set()  # resharded: refresh the map
                    self._finish(it, True)


def make_publisher(cfg, stats: Stats, collector_id: str, enricher=None, live: bool = True,
                   kinesis_client=None, embedded=None) -> Publisher:
    """cfg: collectors.config.CollectConfig. ``embedded``: the publisher class of embedded
    mode (the stream core in this process), injected by the caller (`mirrorscope collect`
    passes stream_app's): collectors never import the stream app."""
    t = cfg.transport
    if t == "kafka":
        return KafkaPublisher(cfg.kafka, cfg.buffer.max_bytes, stats, collector_id, enricher)
    if t == "kinesis":
        return KinesisPublisher(cfg.kinesis, cfg.buffer.max_bytes, cfg.batch.linger_ms / 1000.0,
                                stats, collector_id, enricher, client=kinesis_client)
    if t == "embedded":
        if embedded is None:
            raise PublisherNotReady("embedded mode needs the stream core: run it through "
                                    "`mirrorscope collect`, which provides it")
        return embedded(cfg.embedded, stats, collector_id, enricher, live=live)
    return NullPublisher(stats, collector_id, cfg.null_partitions, enricher=enricher)
