"""``mirrorscope worker``: the Faust (faust-streaming) app that consumes the collectors' packet
topic with the same core as embedded mode and publishes flow, HTTP and alert records.

One consumer group; parallelism is the packet topic's partition count. Faust brings the
consumer group, rebalancing, the producer and the web server (health, readiness, metrics);
state lives in Redis through stream_app/worker.py, not in Faust tables, because a flow's state
must be written together with the offset it reflects.

Offsets are acknowledged by hand (``stream.noack()``): a batch's offset is only acknowledged,
and so committed by Faust, after the checkpoint that includes it is in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from schemas.records import PacketBatch
from stream_app.worker import Runtime, encode_results

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
        web_port=s.web_port,
        web_bind=s.web_bind,
        web_transport="tcp://",
    )
    packets = app.topic(s.packet_topic, key_type=bytes, value_type=bytes)
    outs = {k: app.topic(t, key_type=bytes, value_type=bytes) for k, t in s.topics.items()}
    decode = msgspec.msgpack.Decoder(PacketBatch).decode
    stats = runtime.stats
    consumer_ready = asyncio.Event()

    async def flush() -> None:
        await app.producer.flush()

    def acker(stream):
        async def ack(events: list) -> None:
            for ev in events:
                await stream.ack(ev)
        return ack

    async def publish(res) -> None:
        for kind, key, value in encode_results(res):
            await outs[kind].send(key=key, value=value)

    streams: list = []

    @app.agent(packets)
    async def process(stream):
        s_noack = stream.noack()
        streams.append(s_noack)
        ack = acker(s_noack)
        async for event in s_noack.events():
            msg = event.message
            tp = msg.tp
            if tp not in app.consumer.assignment():
                # A batch fetched before this partition was revoked: its new owner has it.
                stats["batches_not_owned"] += 1
                continue
            try:
                batch = decode(event.value)
            except (msgspec.DecodeError, TypeError) as exc:
                stats["batches_undecodable"] += 1
                log.warning("undecodable packet batch dropped",
                            extra={"partition": tp.partition, "offset": msg.offset,
                                   "error": str(exc)})
                await s_noack.ack(event)
                continue
            name = f"{s.group}:{tp.topic}:{tp.partition}"
            res = await runtime.apply(tp, name, msg.offset, batch, event)
            if res:
                await publish(res)
            if runtime.due(tp):
                await runtime.checkpoint(tp, flush, ack)

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
                await runtime.checkpoint(tp, flush, ack)
        consumer = app.consumer
        for tp in consumer.assignment():
            try:
                hw = consumer.highwater(tp)
                pos = await consumer.position(tp)
            except Exception:
                continue
            if hw is not None and pos is not None:
                runtime.lag[tp] = max(0, hw - pos)
        if metrics is not None:
            metrics.update(runtime)

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kw):
        ack = acker(streams[0]) if streams else None
        for tp in revoked:
            if tp in runtime.owned:
                if ack is not None:
                    await runtime.checkpoint(tp, flush, ack)
                runtime.release(tp)
            runtime.lag.pop(tp, None)
        if streams:
            try:
                await app.consumer.commit()
            except Exception as exc:  # the next owner skips what the snapshot holds anyway
                log.info("commit on revocation failed", extra={"error": repr(exc)})

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kw):
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
        metrics.update(runtime)
        return web.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

    async def shutdown_checkpoint():
        ack = acker(streams[0]) if streams else None
        if ack is None:
            return
        for tp in list(runtime.owned):
            await runtime.checkpoint(tp, flush, ack)

    @app.on_before_shutdown.connect
    async def on_shutdown(app, **kw):
        # SIGTERM (a rolling update, a scale-in): hand the partitions over with nothing to
        # replay. SIGKILL skips this; the snapshot offsets make that safe too.
        await shutdown_checkpoint()
        try:
            await app.consumer.commit()
        except Exception as exc:
            log.info("commit at shutdown failed", extra={"error": repr(exc)})

    app.mirrorscope_started = time.time()
    return app
