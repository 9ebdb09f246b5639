"""The Kafka worker's result producer: one result topic per kind (schemas/kinds.py).

A small adapter on aiokafka's public producer API (``create_batch``, ``send_batch``,
``partitions_for``), beside the Faust app rather than inside it: Faust's producer sends one
message at a time, which costs more than the core's work on the packets, and has no public
way to hand it a whole batch. Each record is one Kafka message (key = the record's id,
partition = a CRC of the key, so a replay's duplicates land beside the originals), gathered in
one producer batch per partition until it is full or the next checkpoint's ``flush``.
"""

from __future__ import annotations

import asyncio
import logging
import zlib

from stream_app.runtime.cores import encode_results

log = logging.getLogger("mirrorscope.worker")


class ResultProducer:
    def __init__(self, settings, topics: dict[str, str]):
        self.s = settings
        self.topics = topics
        self.producer = None
        self._parts: dict[str, int] = {}
        self._futs: list = []
        self._open: dict[tuple[str, int], object] = {}

    async def start(self) -> None:
        """Connect, and learn the result topics' partition counts (``add`` needs them)."""
        from aiokafka import AIOKafkaProducer
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.s.bootstrap.split(","), acks="all",
            compression_type="lz4", max_batch_size=1 << 20, **self.s.security.aiokafka())
        await self.producer.start()
        for topic in self.topics.values():
            self._parts[topic] = len(await self.producer.partitions_for(topic))

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    def partitions_by_kind(self) -> dict[str, int]:
        return {k: self._parts[t] for k, t in self.topics.items()}

    def add_results(self, res) -> None:
        """Records the core made in this process."""
        parts = self._parts
        grouped: dict = {}
        for kind, key, value in encode_results(res):
            topic = self.topics[kind]
            grouped.setdefault((kind, zlib.crc32(key) % parts[topic]), []).append((key, value))
        self.add_grouped(grouped)

    def add_grouped(self, grouped: dict) -> None:
        """Records a core process encoded and grouped by (kind, partition) already."""
        producer = self.producer
        open_ = self._open
        for (kind, p), items in grouped.items():
            tp = (self.topics[kind], p)
            batch = open_.get(tp)
            if batch is None:
                batch = open_[tp] = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    self._send(batch, *tp)
                    batch = open_[tp] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)

    def _send(self, batch, topic: str, p: int) -> None:
        # send_batch waits while the partition has a batch in flight: let it wait in a task,
        # so that the packets go on being processed meanwhile.
        async def send():
            return await (await self.producer.send_batch(batch, topic, partition=p))
        self._futs.append(asyncio.ensure_future(send()))

    async def flush(self) -> None:
        """Send the open batches and wait until every batch sent so far is acknowledged
        (acks=all); raises if one failed. Called before each checkpoint, and at least every
        second: results wait at most that long."""
        if self._open:
            open_, self._open = self._open, {}
            for (topic, p), batch in open_.items():
                self._send(batch, topic, p)
        futs, self._futs = self._futs, []
        if futs:
            await asyncio.gather(*futs)
