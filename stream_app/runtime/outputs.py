"""Where a stream adapter that has no broker of its own (the Kinesis consumer) puts its
results, with the one guarantee the Runtime needs: ``await flush(partition)`` returns only
when every record published for that partition so far is durable, and raises otherwise.
The Runtime writes a partition's snapshot only after that, so a crash never leaves a
snapshot that includes batches whose results are lost.

* ``KafkaResults``: the result topics the Kafka worker writes (kafka-python producer,
  acks=all; key = the record's id, value = msgspec msgpack of the record, as
  stream_app.runtime.runtime.encode_results makes them), so the same sinks read them.
* ``FolderResults``: <kind>.jsonl per result kind (schemas.kinds) in a folder, as `mirrorscope
  analyze` writes them, appended to and fsync'ed at each flush.

Both are at-least-once: batches replayed after a crash make their records again, with the
same ids and content, and readers drop duplicates by id.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from pathlib import Path

import msgspec

from schemas.kinds import NAMES as KINDS, records_of
from stream_app.core.processor import Results
from stream_app.runtime.cores import encode_results

log = logging.getLogger("mirrorscope.outputs")



class OutputError(Exception):
    """Records published for a partition could not be made durable."""


class Outputs:
    """The interface. A failure to publish is not raised by ``publish`` but by the
    partition's next ``flush``: its caller then must not write the partition's snapshot."""

    async def publish(self, partition, res: Results) -> None:
        raise NotImplementedError

    async def flush(self, partition) -> None:
        raise NotImplementedError

    def forget(self, partition) -> None:
        """The partition is no longer ours: drop its bookkeeping (not its records)."""

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {}


class KafkaResults(Outputs):
    def __init__(self, bootstrap: str, topics: dict[str, str], producer=None, **producer_kw):
        if producer is None:
            from kafka import KafkaProducer

            from collectors.kafka_auth import KafkaSecurity
            producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all",
                                     linger_ms=20, compression_type="lz4", retries=10,
                                     **{**KafkaSecurity.from_env().kafka_python(), **producer_kw})
        self.producer = producer
        self.topics = topics
        self.bootstrap = bootstrap
        self._futures: dict[object, list] = defaultdict(list)
        self._errors: dict[object, BaseException] = {}

    def _send_all(self, partition, items) -> None:
        send = self.producer.send
        futs = self._futures[partition]
        try:
            for kind, key, value in items:
                futs.append(send(self.topics[kind], key=key, value=value))
        except Exception as exc:  # buffer full for max_block_ms, no metadata ...
            self._errors.setdefault(partition, exc)

    async def publish(self, partition, res: Results) -> None:
        # send() blocks while the producer's buffer is full: not in the event loop, which
        # renews the shard leases.
        await asyncio.to_thread(self._send_all, partition, encode_results(res))

    async def flush(self, partition) -> None:
        futs = self._futures.pop(partition, [])
        err = self._errors.pop(partition, None)
        try:
            await asyncio.to_thread(self.producer.flush)
        except Exception as exc:
            err = err or exc
        failed = [f for f in futs if not f.is_done or f.failed()]
        if err is None and failed:
            err = getattr(failed[0], "exception", None) or "not acknowledged"
        if err is not None:
            raise OutputError(f"result records not delivered to Kafka ({len(failed)} of "
                              f"{len(futs)} known failed): {err!r}")

    def forget(self, partition) -> None:
        self._futures.pop(partition, None)
        self._errors.pop(partition, None)

    def close(self) -> None:
        try:
            self.producer.flush(timeout=10)
        finally:
            self.producer.close(timeout=5)

    def describe(self) -> dict:
        return {"kafka": self.bootstrap, "topics": self.topics}


class FolderResults(Outputs):
    """JSON lines, one file per kind, shared by every partition of this process. Records are
    buffered in memory and written with whole lines only; a flush writes and fsyncs them. A
    file whose last line was torn by a crash is cut back to its last complete line on open
    (those records were never part of a snapshot: they are made again on replay)."""

    def __init__(self, out_dir: Path, max_buffer: int = 8 << 20):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._fds = {k: self._open(self.out_dir / f"{k}.jsonl") for k in KINDS}
        self._buf: dict[str, list[bytes]] = {k: [] for k in KINDS}
        self._size = 0
        self.max_buffer = max_buffer
        self._enc = msgspec.json.Encoder()
        self._lock = asyncio.Lock()
        self.written = {k: 0 for k in KINDS}
        self._pending: dict = {}  # partition -> publication number of its last unsynced records
        self._seq = 0
        self._broken: dict[object, OSError] = {}  # ... whose records a failed write lost

    @staticmethod
    def _open(path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(fd).st_size
        if size:
            keep = _last_line_end(path, size)
            if keep != size:
                os.ftruncate(fd, keep)
                log.warning("cut a torn last line off a results file",
                            extra={"path": str(path), "bytes": size - keep})
        return fd

    async def publish(self, partition, res: Results) -> None:
        if not res:
            return
        self._seq += 1
        self._pending[partition] = self._seq
        enc = self._enc.encode_lines
        for kind, recs in records_of(res):
            if recs:
                data = enc(recs)
                self._buf[kind.name].append(data)
                self._size += len(data)
                self.written[kind.name] += len(recs)
        if self._size >= self.max_buffer:  # bounded memory; durable at the next flush
            try:
                self._write_out()
            except OSError as exc:
                self._failed(exc)

    def _write_out(self) -> None:
        self._size = 0
        for kind, parts in self._buf.items():
            if parts:
                data = memoryview(b"".join(parts))
                parts.clear()
                fd = self._fds[kind]
                start = os.lseek(fd, 0, os.SEEK_END)
                try:
                    while data:
                        n = os.write(fd, data)
                        data = data[n:]
                except OSError:
                    try:  # no torn line for the next records to be glued to
                        os.ftruncate(fd, start)
                    except OSError:
                        pass
                    raise

    def _failed(self, exc: OSError) -> None:
        # Whatever was buffered is gone: every partition that had records in it must not
        # snapshot until it has made them again (from its last snapshot).
        for k in self._buf:
            self._buf[k].clear()
        self._size = 0
        for p in self._pending:
            self._broken.setdefault(p, exc)
        self._pending.clear()
        log.warning("results folder write failed", extra={"out": str(self.out_dir),
                                                          "error": repr(exc)})

    async def flush(self, partition) -> None:
        # Every partition's records go out together: one fsync per file serves them all.
        async with self._lock:
            mark = self._seq  # what is buffered now is in the files after the fsync
            try:
                self._write_out()
                await asyncio.to_thread(lambda: [os.fsync(fd) for fd in self._fds.values()])
            except OSError as exc:
                self._failed(exc)
            else:
                for p, n in list(self._pending.items()):
                    if n <= mark:
                        del self._pending[p]
            exc = self._broken.pop(partition, None)
            if exc is not None:
                raise OutputError(f"results folder {self.out_dir}: {exc}") from exc

    def forget(self, partition) -> None:
        self._broken.pop(partition, None)

    def close(self) -> None:
        try:
            self._write_out()
            for fd in self._fds.values():
                os.fsync(fd)
        finally:
            for fd in self._fds.values():
                os.close(fd)

    def describe(self) -> dict:
        return {"out": str(self.out_dir)}


def _last_line_end(path: Path, size: int, chunk: int = 1 << 16) -> int:
    """The length of the file up to and including its last newline (0: none)."""
    with open(path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            data = f.read(end - start)
            i = data.rfind(b"\n")
            if i >= 0:
                return start + i + 1
            end = start
    return 0
