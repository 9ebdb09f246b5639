"""``mirrorscope worker``: the Faust (faust-streaming) app that consumes the collectors' packet
topic with the same core as embedded mode and publishes flow, HTTP and alert records.

One consumer group; parallelism is the packet topic's partition count. Faust brings the
consumer group, rebalancing, the producer and the web server (health, readiness, metrics);
state lives in Redis through stream_app/runtime/runtime.py, not in Faust tables, because a flow's state
must be written together with the offset it reflects.

Offsets are acknowledged by hand (``stream.noack()``): a batch's offset is only acknowledged,
and so committed by Faust, after the checkpoint that includes it is in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from schemas.records import PacketBatch
from stream_app.runtime.runtime import GAP, PublishFailed, Runtime, encode_results

log = logging.getLogger("mirrorscope.worker")


@dataclass
class WorkerSettings:
    bootstrap: str = "localhost:9092"
    group: str = "mirrorscope-worker"
    packet_topic: str = "mirrorscope.packets"
    topics: dict = field(default_factory=lambda: {
        "flows": "mirrorscope.flows", "http": "mirrorscope.http", "alerts": "mirrorscope.alerts"})
    web_port: int = 6066
    web_bind: str = "0.0.0.0"
    datadir: str = "/tmp/mirrorscope-worker"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    timer_interval: float = 0.5
    session_timeout: float = 30.0


def _credentials(s: WorkerSettings):
    import faust
    if s.security_protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if "SSL" in s.security_protocol:
        import ssl
        ssl_context = ssl.create_default_context(cafile=s.ssl_cafile)
    if "SASL" in s.security_protocol:
        return faust.SASLCredentials(username=s.sasl_username, password=s.sasl_password,
                                     mechanism=s.sasl_mechanism or "SCRAM-SHA-512",
                                     ssl_context=ssl_context)
    return faust.SSLCredentials(ssl_context)


class ResultPublisher:
    """Result records, one Kafka message each (key = the record's id, partition by a CRC of the
    key, so a replay's duplicates land beside the originals), gathered in one producer batch
    per partition until it is full or the next checkpoint: Faust's per-message send costs
    more than the core's work on the packets."""

    def __init__(self, app, topics: dict[str, str]):
        self.app = app
        self.topics = topics
        self._parts: dict[str, int] = {}
        self._futs: list = []
        self._open: dict[tuple[str, int], object] = {}

    async def _partitions(self, producer, topic: str) -> int:
        n = self._parts.get(topic)
        if n is None:
            n = self._parts[topic] = len(await producer.partitions_for(topic))
        return n

    async def prepare(self) -> None:
        """Learn the result topics' partition counts (``add`` needs them at hand)."""
        producer = self.app.producer._ensure_producer()
        for topic in self.topics.values():
            await self._partitions(producer, topic)

    async def publish(self, res) -> None:
        """Add the records to the open batch of their partition; a full batch is sent."""
        await self.prepare()
        self.add(encode_results(res))

    def add_grouped(self, grouped: dict) -> None:
        """Records a core process encoded and grouped by (kind, partition) already."""
        producer = self.app.producer._ensure_producer()
        open_ = self._open
        for (kind, p), items in grouped.items():
            tp = (self.topics[kind], p)
            batch = open_.get(tp)
            if batch is None:
                batch = open_[tp] = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    self._send(producer, batch, *tp)
                    batch = open_[tp] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)

    def partitions_by_kind(self) -> dict[str, int]:
        return {k: self._parts[t] for k, t in self.topics.items()}

    def add(self, encoded: list) -> None:
        """The same for records encoded already (by a core process)."""
        producer = self.app.producer._ensure_producer()
        open_ = self._open
        parts = self._parts
        for kind, key, value in encoded:
            topic = self.topics[kind]
            # The ids are hashes already: a CRC of one spreads them as evenly as murmur2,
            # at a fraction of a pure-Python murmur2's cost.
            tp = (topic, zlib.crc32(key) % parts[topic])
            batch = open_.get(tp)
            if batch is None:
                batch = open_[tp] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                self._send(producer, batch, *tp)
                batch = open_[tp] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)

    def _send(self, producer, batch, topic: str, p: int) -> None:
        # send_batch waits while the partition has a batch in flight: let it wait in a task,
        # so that the packets go on being processed meanwhile.
        async def send():
            return await (await producer.send_batch(batch, topic, partition=p))
        self._futs.append(asyncio.ensure_future(send()))

    async def flush(self) -> None:
        """Send the open batches and wait until every batch sent so far is acknowledged
        (acks=all); raises if one failed. Called before each checkpoint, and at least every
        second: results wait at most that long."""
        if self._open:
            producer = self.app.producer._ensure_producer()
            open_, self._open = self._open, {}
            for (topic, p), batch in open_.items():
                self._send(producer, batch, topic, p)
        futs, self._futs = self._futs, []
        if futs:
            await asyncio.gather(*futs)


FETCH_MAX_WAIT_MS = 100


def _shorten_fetch_wait(app) -> None:
    """aiokafka keeps one fetch in flight per broker, and Faust asks it to long-poll for
    1.5 s: once some partitions are at their end, that long poll holds back the next fetch
    of the others, whose batches are waiting (bench_worker.py showed two such 1.1 s stalls in
    a 4.7 s run). Faust has no setting for it, hence the private attribute."""
    try:
        app.consumer._thread._consumer._fetcher._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    except AttributeError:  # another Faust or aiokafka: keep theirs
        log.info("could not shorten the consumer's fetch wait")


def build_app(s: WorkerSettings, runtime: Runtime, metrics=None):
    import faust

    Path(s.datadir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        s.group,
        broker=[f"kafka://{b}" for b in s.bootstrap.split(",")],
        broker_credentials=_credentials(s),
        datadir=s.datadir,
        key_serializer="raw",
        value_serializer="raw",
        stream_wait_empty=False,  # unacked batches wait for a checkpoint, not for Faust
        topic_disable_leader=True,
        topic_allow_declare=False,  # topics are made by Terraform/Helm or `services up`
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=s.session_timeout,
        broker_heartbeat_interval=max(1.0, s.session_timeout / 10),
        broker_rebalance_timeout=max(10.0, s.session_timeout * 2),
        producer_acks=-1,
        producer_compression_type="lz4",
        producer_max_batch_size=1 << 20,
        consumer_max_fetch_size=32 << 20,  # per partition: fewer fetch round trips to wait on
        web_port=s.web_port,
        web_bind=s.web_bind,
        web_transport="tcp://",
    )
    packets = app.topic(s.packet_topic, key_type=bytes, value_type=bytes)
    decode = msgspec.msgpack.Decoder(PacketBatch).decode
    stats = runtime.stats
    consumer_ready = asyncio.Event()

    publisher = ResultPublisher(app, s.topics)
    flush = publisher.flush
    publish = publisher.publish

    def acker(stream):
        async def ack(events: list) -> None:
            for ev in events:
                await stream.ack(ev)
        return ack

    streams: list = []
    remote = getattr(runtime, "remote", False)
    bound: list = []

    async def bind() -> None:
        await publisher.prepare()

        async def seek(tp, offset):
            await app.consumer.seek(tp, offset)
        runtime.bind(publisher.add_grouped, seek, publisher.partitions_by_kind())
        bound.append(True)

    @app.agent(packets)
    async def process(stream):
        s_noack = stream.noack()
        streams.append(s_noack)
        ack = acker(s_noack)
        t_end = None
        async for event in s_noack.events():
            if t_end is not None:
                stats["idle_us"] += (time.perf_counter_ns() - t_end) // 1000
            msg = event.message
            tp = msg.tp
            if tp not in app.consumer.assignment():
                # A batch fetched before this partition was revoked: its new owner has it.
                stats["batches_not_owned"] += 1
                continue
            if remote:
                # Decoded and applied in a core process; results published as it answers.
                if not bound:
                    await bind()
                await runtime.apply(tp, f"{s.group}:{tp.topic}:{tp.partition}", msg.offset,
                                    event.value, event)
                if runtime.due(tp):
                    background_checkpoint(tp, ack)
                continue
            try:
                batch = decode(event.value)
            except (msgspec.DecodeError, TypeError) as exc:
                # Dropped and counted; the partition's offset still moves past it (and is
                # committed in order with the batches around it).
                batch = None
                stats["batches_undecodable"] += 1
                log.warning("undecodable packet batch dropped",
                            extra={"partition": tp.partition, "offset": msg.offset,
                                   "error": str(exc)})
            name = f"{s.group}:{tp.topic}:{tp.partition}"
            t0 = time.perf_counter_ns()
            res = await runtime.apply(tp, name, msg.offset, batch, event)
            if res is GAP:
                await app.consumer.seek(tp, runtime.expected(tp))
                continue
            t1 = time.perf_counter_ns()
            if res:
                await publish(res)
            t2 = time.perf_counter_ns()
            if runtime.due(tp):
                background_checkpoint(tp, ack)
            t3 = time.perf_counter_ns()
            stats["apply_us"] += (t1 - t0) // 1000
            stats["publish_us"] += (t2 - t1) // 1000
            stats["checkpoint_us"] += (t3 - t2) // 1000
            t_end = time.perf_counter_ns()

    running: dict = {}

    def background_checkpoint(tp, ack) -> None:
        t = running.get(tp)
        if t is None or t.done():
            running[tp] = asyncio.ensure_future(checkpoint(tp, ack))

    async def checkpoint(tp, ack) -> None:
        try:
            await runtime.checkpoint(tp, flush, ack)
        except PublishFailed as exc:
            log.critical("results could not be delivered; exiting so that a restart makes "
                         "them again from the last snapshot", extra={"error": str(exc)})
            os._exit(75)  # EX_TEMPFAIL; Kubernetes restarts the pod

    @app.timer(s.timer_interval)
    async def housekeeping():
        if not streams:
            return
        ack = acker(streams[0])
        for tp in list(runtime.owned):
            res = runtime.advance_idle(tp)
            if res:
                await publish(res)
            if runtime.due(tp):
                background_checkpoint(tp, ack)
        consumer = app.consumer
        for tp in consumer.assignment():
            try:
                hw = consumer.highwater(tp)
                pos = await consumer.position(tp)
            except Exception:
                continue
            if hw is not None and pos is not None:
                runtime.lag[tp] = max(0, hw - pos)

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kw):
        ack = acker(streams[0]) if streams else None
        for tp in revoked:
            if tp in runtime.owned:
                if ack is not None:
                    await checkpoint(tp, ack)
                runtime.release(tp)
            runtime.lag.pop(tp, None)
        if streams:
            try:
                await app.consumer.commit()
            except Exception as exc:  # the next owner skips what the snapshot holds anyway
                log.info("commit on revocation failed", extra={"error": repr(exc)})

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kw):
        runtime.assigned(assigned)
        _shorten_fetch_wait(app)
        consumer_ready.set()
        log.info("partitions assigned",
                 extra={"partitions": sorted(tp.partition for tp in assigned
                                             if tp.topic == s.packet_topic)})

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web, request):
        ok = consumer_ready.is_set()
        try:
            assigned = sorted(tp.partition for tp in app.consumer.assignment()
                              if tp.topic == s.packet_topic)
        except Exception:  # not started yet
            assigned = []
        body = {"ready": ok, "assigned": assigned,
                "loaded": sorted(tp.partition for tp in runtime.owned), "stats": dict(stats)}
        return web.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def prom(web, request):
        if metrics is None:
            return web.text("", status=404)
        return web.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

    async def shutdown_checkpoint():
        ack = acker(streams[0]) if streams else None
        if ack is None:
            return
        for tp in list(runtime.owned):
            await checkpoint(tp, ack)

    @app.on_before_shutdown.connect
    async def on_shutdown(app, **kw):
        # SIGTERM (a rolling update, a scale-in): hand the partitions over with nothing to
        # replay. SIGKILL skips this; the snapshot offsets make that safe too.
        await shutdown_checkpoint()
        try:
            await app.consumer.commit()
        except Exception as exc:
            log.info("commit at shutdown failed", extra={"error": repr(exc)})
        if remote:
            runtime.close()

    app.mirrorscope_started = time.time()
    return app
