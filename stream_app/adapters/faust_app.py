"""``mirrorscope worker``: the Faust (faust-streaming) app that consumes the collectors' packet
topic with the same core as embedded mode and publishes its records (every result kind of schemas/kinds.py).

One consumer group; parallelism is the packet topic's partition count. Faust brings the
consumer group, rebalancing and the agent; state lives in Redis through the runtime
(stream_app/runtime/runtime.py), not in Faust tables, because a flow's state must be written
together with the offset it reflects. Offsets are acknowledged by hand (``stream.noack()``):
a batch's offset is only acknowledged, and so committed by Faust, after the checkpoint that
includes it is in Redis. Results go out through adapters/kafka_results.py (aiokafka's public
batch API); health, readiness and metrics through runtime/health.py (the one server both
workers use), so Faust's own web server is off.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from collectors.kafka_auth import KafkaSecurity
from schemas.kinds import KINDS
from stream_app.adapters.kafka_results import ResultProducer
from stream_app.runtime.runtime import PublishFailed, Runtime

log = logging.getLogger("mirrorscope.worker")


@dataclass
class WorkerSettings:
    bootstrap: str = "localhost:9092"
    group: str = "mirrorscope-worker"
    packet_topic: str = "mirrorscope.packets"
    topics: dict = field(default_factory=lambda: {k.name: k.topic for k in KINDS})
    datadir: str = "/tmp/mirrorscope-worker"
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    timer_interval: float = 0.5
    session_timeout: float = 30.0


class PacketWorker:
    """What the agent, the timer and the rebalance callbacks do, around the runtime."""

    def __init__(self, app, s: WorkerSettings, runtime: Runtime):
        self.app = app
        self.s = s
        self.runtime = runtime
        self.results = ResultProducer(s, s.topics)
        self.stream = None  # the agent's noack stream: acks go through it
        self.ready = asyncio.Event()
        self.started = asyncio.Event()  # the result producer is up and the runtime bound
        self.fatal: BaseException | None = None
        self._running: dict = {}

    def name(self, tp) -> str:
        return f"{self.s.group}:{tp.topic}:{tp.partition}"

    async def start(self) -> None:
        await self.results.start()

        async def seek(tp, offset: int) -> None:
            await self.app.consumer.seek(tp, offset)
        self.runtime.bind(self.results.add_grouped, seek, self.results.partitions_by_kind())
        self.started.set()

    async def on_event(self, event) -> None:
        if not self.started.is_set():
            await self.started.wait()
        tp = event.message.tp
        rt = self.runtime
        if tp not in self.app.consumer.assignment():
            # A batch fetched before this partition was revoked: its new owner has it.
            rt.stats["batches_not_owned"] += 1
            return
        res = await rt.apply(tp, self.name(tp), event.message.offset, event.value, event)
        if res:
            self.results.add_results(res)
        if rt.due(tp):
            self._background_checkpoint(tp)

    async def _ack(self, events: list) -> None:
        for ev in events:
            await self.stream.ack(ev)

    def _background_checkpoint(self, tp) -> None:
        t = self._running.get(tp)
        if t is None or t.done():
            self._running[tp] = asyncio.ensure_future(self.checkpoint(tp))

    async def checkpoint(self, tp) -> None:
        if self.fatal is not None or self.stream is None:
            return
        try:
            await self.runtime.checkpoint(tp, self.results.flush, self._ack)
        except PublishFailed as exc:
            # Results the broker refused are made again only by a restart from the last
            # snapshot: no more checkpoints; the worker stops (exit 75, EX_TEMPFAIL).
            self.fatal = exc
            self.runtime.problem("publish", str(exc))
            log.critical("results could not be delivered; stopping so that a restart makes "
                         "them again from the last snapshot", extra={"error": str(exc)})
            await self.app.crash(exc)

    async def housekeeping(self) -> None:
        if not self.started.is_set():
            return
        rt = self.runtime
        for tp in list(rt.owned):
            res = rt.advance_idle(tp)
            if res:
                self.results.add_results(res)
            if rt.due(tp):
                self._background_checkpoint(tp)
        consumer = self.app.consumer
        for tp in consumer.assignment():
            try:
                hw = consumer.highwater(tp)
                pos = await consumer.position(tp)
            except Exception:
                continue
            if hw is None or pos is None:
                continue
            # Lag counts from what was applied, not fetched: a partition whose batches are
            # fetched but not applied (a crashed agent) must not look caught up.
            applied = rt.applied(tp)
            rt.set_lag(tp, max(0, hw - (applied + 1 if applied is not None else pos)))

    async def revoked(self, revoked) -> None:
        rt = self.runtime
        for tp in revoked:
            if tp in rt.owned:
                await self.checkpoint(tp)
                rt.release(tp)
            rt.forget_lag(tp)
        await self._commit("revocation")

    def assigned(self, assigned) -> None:
        self.runtime.assigned(assigned)
        self.ready.set()
        log.info("partitions assigned",
                 extra={"partitions": sorted(tp.partition for tp in assigned
                                             if tp.topic == self.s.packet_topic)})

    async def shutdown(self) -> None:
        # SIGTERM (a rolling update, a scale-in): hand the partitions over with nothing to
        # replay. SIGKILL skips this; the snapshot offsets make that safe too.
        for tp in list(self.runtime.owned):
            await self.checkpoint(tp)
        await self._commit("shutdown")
        await self.results.stop()
        self.runtime.close()

    async def _commit(self, when: str) -> None:
        if self.stream is None:
            return
        try:
            await self.app.consumer.commit()
        except Exception as exc:  # the next owner skips what the snapshot holds anyway
            log.info(f"commit on {when} failed", extra={"error": repr(exc)})

    def status(self) -> dict:
        rt = self.runtime
        ready, problems = rt.health()
        try:
            assigned = sorted(tp.partition for tp in self.app.consumer.assignment()
                              if tp.topic == self.s.packet_topic)
        except Exception:  # not started yet
            assigned = []
        return {"ready": self.ready.is_set() and ready, "assigned": assigned,
                "loaded": sorted(tp.partition for tp in rt.owned), "problems": problems,
                "stats": dict(rt.stats)}


def build_app(s: WorkerSettings, runtime: Runtime, health=None):
    """The Faust app: a topic, an agent, a timer, the rebalance signals. ``health``: a
    runtime/health.py HealthServer, started and stopped with the app."""
    import faust

    Path(s.datadir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        s.group,
        broker=[f"kafka://{b}" for b in s.bootstrap.split(",")],
        broker_credentials=s.security.faust_credentials(),
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
        consumer_max_fetch_size=32 << 20,  # per partition: fewer fetch round trips to wait on
        web_enabled=False,  # one health/metrics server for every worker: runtime/health.py
    )
    packets = app.topic(s.packet_topic, key_type=bytes, value_type=bytes)
    worker = app.mirrorscope = PacketWorker(app, s, runtime)

    @app.task
    async def start():
        if health is not None:
            await health.start()
        await worker.start()

    @app.agent(packets)
    async def process(stream):
        worker.stream = stream.noack()
        try:
            async for event in worker.stream.events():
                await worker.on_event(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Readiness tells: a crashed agent leaves its partitions assigned and stalled.
            runtime.stats["agent_crashes"] += 1
            runtime.problem("agent", f"the packet agent crashed: {exc!r}")
            log.exception("the packet agent crashed")
            raise

    @app.timer(s.timer_interval)
    async def housekeeping():
        await worker.housekeeping()

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kw):
        await worker.revoked(revoked)

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kw):
        worker.assigned(assigned)

    @app.on_before_shutdown.connect
    async def on_shutdown(app, **kw):
        await worker.shutdown()
        if health is not None:
            await health.stop()

    return app
