"""`mirrorscope worker --processes N`: the core in N subprocesses, so that one worker uses more
than one CPU (the GIL keeps a single process on one).

The consuming process keeps what stream_app/runtime/runtime.py keeps for every partition (the
ownership record, the checkpoint protocol, the broker handles); each core process holds the
PartitionStates of the partitions given to it and runs runtime/cores.py's CoreServer on them,
behind a pipe: the runtime's typed messages (runtime/messages.py) as msgpack, the batch as the
broker's bytes (decoded in the subprocess), the results back encoded and grouped by result
partition. Only where the state lives differs from the in-process runtime.

A core process that dies takes its partitions' states with it: they are restored from their
snapshots on a live core when their next batch comes (a gap, so the adapter seeks back to the
snapshot's offset), a new core process takes the dead one's place, and the event is counted
(core_crashes) and reported by /readyz for a while.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable

import msgspec

from schemas.kinds import NAMES
from stream_app.core.processor import CoreConfig
from stream_app.runtime.cores import CoreServer
from stream_app.runtime.messages import Apply, Layout, Release, Reply, Request, Saved, Unowned
from stream_app.runtime.runtime import Runtime, RuntimeConfig
from stream_app.state.codec import Codec

log = logging.getLogger("mirrorscope.worker")
MAX_IN_FLIGHT = 32  # batches sent to one core process and not answered yet
NO_REPLY = (Saved, Release, Layout)
_ENC = msgspec.msgpack.Encoder()


_ENC = msgspec.msgpack.Encoder()


def serve(conn, key: bytes, core: CoreConfig, detect, redis_cfg, detect_prefix: str,
          contiguous: bool) -> None:
    """A core process' loop: a request (and, for Apply, the batch's bytes), then its reply."""
    detectors = None
    if detect is not None:
        from stream_app.core.detectors import Detectors
        from stream_app.state.detectors import RedisDetectorState
        from stream_app.state.store import connect
        detectors = Detectors(detect, state=RedisDetectorState(connect(redis_cfg),
                                                               prefix=detect_prefix))
    server = CoreServer(Codec(key), core, detectors, contiguous, encode=True)
    decode = msgspec.msgpack.Decoder(Request).decode
    encode = _ENC.encode
    while True:
        try:
            msg = decode(conn.recv_bytes())
            batch = conn.recv_bytes() if type(msg) is Apply else None
        except (EOFError, OSError):
            return
        reply = server.handle(msg, batch)
        if reply is not None:
            conn.send_bytes(encode(reply))


class CoreProcess:
    """A core in a subprocess (multiprocessing, spawn). Requests are written by a thread: a
    blocking write of a large batch while the subprocess is blocked writing its reply (which
    only the event loop reads) would deadlock."""

    local = False

    def __init__(self, index: int, ctx, args, on_death: Callable[[CoreProcess], None]):
        self.index = index
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=serve, args=(child_conn, *args), daemon=True,
                                name=f"mirrorscope-core-{index}")
        self.proc.start()
        child_conn.close()
        self.alive = True
        self.fifo: collections.deque = collections.deque()
        self.slots: asyncio.Semaphore | None = None
        self._on_death = on_death
        self._decode = msgspec.msgpack.Decoder(Reply).decode
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._writer, name=f"core-{index}-writer", daemon=True).start()

    def attach(self) -> None:
        """Start reading replies (in the event loop that will send the requests)."""
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        asyncio.get_running_loop().add_reader(self.conn.fileno(), self._on_readable)

    def _writer(self) -> None:
        encode = _ENC.encode
        while True:
            item = self._out.get()
            if item is None:
                return
            msg, batch = item
            try:
                self.conn.send_bytes(encode(msg))
                if type(msg) is Apply:
                    self.conn.send_bytes(batch if batch is not None else b"")
            except (OSError, ValueError):
                return  # the reader sees the process gone

    def request(self, msg: Request, batch, done: Callable[[Reply], None] | None) -> None:
        if not self.alive:
            if done is not None:
                done(Unowned())
            return
        if not isinstance(msg, NO_REPLY):
            self.fifo.append(done)
        self._out.put((msg, batch))

    def send(self, msg: Request) -> None:
        self.request(msg, None, None)

    def _on_readable(self) -> None:
        try:
            while self.conn.poll():
                reply = self._decode(self.conn.recv_bytes())
                done = self.fifo.popleft()
                if done is not None:
                    done(reply)
        except (EOFError, OSError):
            self._died()

    def _died(self) -> None:
        if not self.alive:
            return
        self.alive = False
        try:
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
        except (OSError, ValueError):
            pass
        self._out.put(None)
        # Whoever waits for an answer gets one: the states this process held are gone.
        fifo, self.fifo = self.fifo, collections.deque()
        for done in fifo:
            if done is not None:
                done(Unowned())
        self._on_death(self)

    def close(self) -> None:
        """Stop the process (a deliberate end, not a crash)."""
        self.alive = False
        try:
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
        except (OSError, ValueError, RuntimeError):
            pass
        self._out.put(None)
        self.conn.close()
        self.proc.terminate()


class RemoteRuntime(Runtime):
    """The Runtime with its partition states in ``processes`` core processes."""

    def __init__(self, store, key: bytes, core: CoreConfig, processes: int,
                 rt: RuntimeConfig | None = None, detect=None, redis_cfg=None,
                 detect_prefix: str = "md"):
        rt = rt or RuntimeConfig()
        core = CoreConfig(flows=core.flows, l7=core.l7, detect=None)
        self._ctx = multiprocessing.get_context("spawn")
        self._args = (key, core, detect, redis_cfg, detect_prefix, rt.contiguous_offsets)
        self._layout: Layout | None = None
        cores = [CoreProcess(i, self._ctx, self._args, self._on_core_death)
                 for i in range(processes)]
        super().__init__(store, None, core, rt, None, cores=cores)

    def bind(self, publish_grouped, seek, partitions: dict[str, int]) -> None:
        missing = [k for k in NAMES if k not in partitions]
        if missing:
            # Checked here, not in the core process: a kind without a partition count would
            # kill every core at its first record of that kind.
            raise ValueError(f"no result partition count for {', '.join(missing)}")
        super().bind(publish_grouped, seek, partitions)
        self._layout = Layout(dict(partitions))
        for c in self.cores:
            c.attach()
            c.send(self._layout)

    def _on_core_death(self, core: CoreProcess) -> None:
        self.core_died(core)
        new = CoreProcess(core.index, self._ctx, self._args, self._on_core_death)
        new.attach()
        if self._layout is not None:
            new.send(self._layout)
        self.cores[self.cores.index(core)] = new
        try:
            core.proc.join(0)
        except Exception:
            pass

    def close(self) -> None:
        """Stop the core processes (a deliberate end, not a crash)."""
        for c in self.cores:
            c.close()
        for c in self.cores:
            c.proc.join(10)
