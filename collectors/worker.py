"""One collector process: socket -> decode -> pipeline -> publisher, and its shutdown.

The packet loop reads datagrams in batches (recvmmsg), admits them (source CIDR, VNI), decodes
them with the C fast path (the Python reference decoder takes what it declines), and hands
the records to the pipeline. Between batches, every few milliseconds, it lets lingering
batches go, reaps the publisher's completions and, once a second, reports its counters to
the parent process. It never waits on the destination: the publisher drops, counted, what
exceeds its buffer, so the socket keeps being drained.

``replay()`` runs the same pipeline over a capture file, in the calling process.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import signal
import socket
import sys
import threading
import time

import msgspec

from collectors import logs
from collectors.config import CollectConfig, resolve_defaults
from collectors.decode import DROP_REASONS, Decoder, PayloadPolicy
from collectors.enrich import Enricher
from collectors.mirrorfilter import MirrorFilter
from collectors.pipeline import Pipeline
from collectors.publishers import Publisher, PublisherNotReady, make_publisher
from collectors.stats import Stats
from collectors.udp import SLOT
from schemas.records import PacketRecord

try:
    from collectors import _fastdecode
except ImportError:  # pragma: no cover
    _fastdecode = None

log = logging.getLogger("mirrorscope.collect")

EXIT_FATAL = 2  # a configuration problem: the parent does not restart the worker
HOUSEKEEPING_S = 0.005
DRAIN_LIMIT_S = 2.0


def payload_policy(cfg: CollectConfig) -> PayloadPolicy:
    p = cfg.payload
    return PayloadPolicy(max_bytes=p.max_bytes, ports=None if p.all_ports else frozenset(p.ports))


class SourceCheck:
    """Outer source address -> allowed, memoised (the set of mirror sources is small).

    Default-deny: a live collector accepts a datagram only from ``source_cidrs`` or from a
    mirror source the EC2 discovery found (the primary IP of a mirrored ENI, which is the outer
    source of its VXLAN), unless ``accept_any_source`` says otherwise. A capture replay (not
    network input: the operator chose the file) checks sources only when CIDRs are given."""

    def __init__(self, cidrs: list[str], enricher=None, accept_any: bool = False,
                 live: bool = True):
        self.nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self.enricher = enricher
        self.any = accept_any or (not live and not self.nets)
        self.cache: dict[bytes, bool] = {}
        self._table = None  # the enricher's table the cache was made with

    def allowed(self, addr: bytes | None) -> bool:
        if self.any:
            return True
        if addr is None:
            return False
        if self.enricher is not None and self.enricher.table() is not self._table:
            # discovery replaced its table: a source may have come or gone
            self._table = self.enricher.table()
            self.cache.clear()
        ok = self.cache.get(addr)
        if ok is None:
            if len(self.cache) > 65536:
                self.cache.clear()
            ip = ipaddress.ip_address(addr)
            ok = any(ip in n for n in self.nets) or (
                self.enricher is not None and str(ip) in self.enricher.mirror_sources())
            self.cache[addr] = ok
        return ok

    def fresh(self) -> dict[bytes, bool]:
        """The memo, cleared first if discovery changed the mirror sources (call per batch)."""
        if self.enricher is not None and self.enricher.table() is not self._table:
            self._table = self.enricher.table()
            self.cache.clear()
        return self.cache


class Components:
    """What the socket loop and the replay share."""

    def __init__(self, cfg: CollectConfig, collector_id: str, live: bool, block: bool = False,
                 kinesis_client=None, embedded=None):
        self.cfg = resolve_defaults(cfg)
        self.stats = Stats()
        self.enricher = Enricher.from_config(cfg.enrichment)
        self.filter = MirrorFilter.from_rules(cfg.filter.rules)
        self.policy = payload_policy(cfg)
        self.decoder = Decoder(payload=self.policy)
        self.sources = SourceCheck(cfg.source_cidrs, self.enricher, cfg.accept_any_source, live)
        self.vnis = frozenset(cfg.vnis) if cfg.vnis else None
        self.publisher: Publisher = make_publisher(cfg, self.stats, collector_id, self.enricher,
                                                   live=live, kinesis_client=kinesis_client,
                                                   embedded=embedded)
        self.pipeline: Pipeline | None = None
        self.block = block

    def start_publisher(self) -> None:
        self.publisher.start()
        self.pipeline = Pipeline(self.cfg.batch, self.publisher, self.stats, self.filter,
                                 block_when_full=self.block)

    def sync_stats(self) -> Stats:
        st = self.stats
        for r in DROP_REASONS:
            st.drops[r] = self.decoder.drops[r]
        pend = self.pipeline.pending_records() if self.pipeline else 0
        st.queued_records = pend + self.publisher.inflight_records()
        st.queued_bytes = self.publisher.inflight_bytes()
        if self.enricher is not None:
            st.enrichment_misses = self.enricher.lookups_failed
        return st

    def housekeeping(self, now: float) -> None:
        self.pipeline.tick(now)
        self.publisher.poll(now)

    def shutdown(self, timeout: float) -> None:
        """Send every batch, wait for the destination (at most ``timeout``), give up on the
        rest (counted)."""
        deadline = time.monotonic() + timeout
        if self.pipeline is not None:
            self.pipeline.flush_all()
            self.sync_stats()  # current drop counts for embedded mode's final summary
        self.publisher.flush(max(0.0, deadline - time.monotonic()))
        self.publisher.close(max(0.0, deadline - time.monotonic()))
        if self.enricher is not None:
            self.enricher.stop()


class Worker:
    def __init__(self, cfg: CollectConfig, index: int, conn=None, embedded=None):
        self.cfg = cfg
        self.index = index
        self.conn = conn
        self.stop = False
        self.collector_id = cfg.collector_id or f"{socket.gethostname()}:{os.getpid()}"
        if cfg.collector_id and cfg.processes != 1:
            self.collector_id = f"{cfg.collector_id}/{index}"
        self.c = Components(cfg, self.collector_id, live=True, embedded=embedded)
        self.ready = False
        self.sock = None
        self.inode = None
        self.rcvbuf = 0
        self._next_report = 0.0

    def _on_signal(self, signum, frame) -> None:
        self.stop = True

    def report(self, final: bool = False) -> None:
        st = self.c.sync_stats()
        if self.inode is not None:
            from collectors.udp import socket_drops
            d = socket_drops(self.inode)
            if d is not None:
                st.kernel_drops = d
        snap = st.snapshot()
        snap.update(worker=self.index, pid=os.getpid(), ready=self.ready, final=final,
                    collector=self.collector_id, time=time.time())
        core = self.c.publisher.core_stats() if self.c.publisher is not None else None
        if core:
            snap["core"] = core
        if self.conn is not None:
            try:
                self.conn.send(snap)
            except (BrokenPipeError, EOFError, OSError):
                self.stop = True  # the parent is gone: stop too
        self.last_snapshot = snap

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        from collectors.udp import Receiver, open_socket, socket_inode

        if self.c.enricher is not None:
            self.c.enricher.start()
        delay = 0.5
        while not self.stop:
            try:
                self.c.start_publisher()
                break
            except PublisherNotReady as exc:
                log.warning("destination not ready; retrying", extra={"error": str(exc),
                                                                     "retry_in_s": delay})
                self.report()
                end = time.monotonic() + delay
                while not self.stop and time.monotonic() < end:
                    time.sleep(0.05)
                delay = min(delay * 2, 10.0)
        if self.stop:
            self.c.shutdown(0.0)
            self.report(final=True)
            return 0
        lc = self.cfg.listen
        try:
            self.sock, self.rcvbuf = open_socket(lc.address, lc.port, lc.rcvbuf_bytes)
        except OSError as exc:
            log.error("cannot listen", extra={"address": lc.address, "port": lc.port,
                                              "error": str(exc)})
            self.c.shutdown(0.0)
            self.report(final=True)
            return EXIT_FATAL
        self.inode = socket_inode(self.sock)
        if self.rcvbuf < lc.rcvbuf_bytes:
            log.warning("socket receive buffer smaller than configured (raise net.core.rmem_max "
                        "or run with CAP_NET_ADMIN)", extra={"wanted": lc.rcvbuf_bytes,
                                                            "granted": self.rcvbuf})
        rx = Receiver(self.sock, lc.recv_batch)
        self.ready = True
        log.info("receiving", extra={"address": lc.address, "port": self.sock.getsockname()[1],
                                     "rcvbuf": self.rcvbuf, "recvmmsg": rx.mmsg,
                                     "transport": self.cfg.transport,
                                     "collector": self.collector_id})
        self.report()
        try:
            self._loop(rx)
        finally:
            # Drain what is already queued for this socket, then close it: from here on the
            # kernel hands new datagrams to the other processes sharing the port.
            try:
                self._drain(rx)
            finally:
                self.sock.close()
                self.ready = False
            self.c.shutdown(self.cfg.shutdown_timeout_s)
            self.report(final=True)
        log.info("stopped", extra=self.last_snapshot)
        return 0

    def _process(self, rx, k: int, now: float) -> None:
        """Admit and decode the k datagrams just read; hand the records to the pipeline."""
        c = self.c
        st = c.stats
        lens = rx.lengths(k)
        srcs = rx.sources(k)
        buf = rx.buf
        ts = time.time_ns()
        fast = self._fast
        fcfg = self._fcfg
        pydec = c.decoder.decode_vxlan
        check = not c.sources.any
        allowed = c.sources.fresh()
        vnis = c.vnis
        recs: list = []
        append = recs.append
        oversize = srcdrop = vnidrop = 0
        off = -SLOT
        for i in range(k):
            off += SLOT
            n = lens[i]
            if n < 0:
                oversize += 1
                continue
            src = srcs[i]
            if check:
                ok = allowed.get(src)
                if ok is None:
                    ok = c.sources.allowed(src)
                if not ok:
                    srcdrop += 1
                    continue
            d = buf[off:off + n]
            if vnis is not None and n >= 8 and d[0] & 0x08 and \
                    int.from_bytes(d[4:7], "big") not in vnis:
                vnidrop += 1
                continue
            r = fast(fcfg, d, src, ts) if fast is not None else None
            if r is None:
                r = pydec(bytes(d), src, ts)
                if r is None:
                    continue
            append(r)
        st.received += k
        if oversize or srcdrop or vnidrop:
            st.drops["oversize"] += oversize
            st.drops["source_not_allowed"] += srcdrop
            st.drops["vni_not_allowed"] += vnidrop
        st.decoded += len(recs)
        c.pipeline.add(recs, now)

    def _loop(self, rx) -> None:
        c = self.c
        if _fastdecode is not None:
            self._fast = _fastdecode.decode_vxlan
            self._fcfg = _fastdecode.Config(PacketRecord, c.policy.max_bytes,
                                            c.policy.port_bitmap(), False, 1, 1)
        else:  # pragma: no cover
            self._fast = self._fcfg = None
        poller = select.poll()
        poller.register(rx.fd, select.POLLIN)
        wait_ms = max(1, min(20, int(self.cfg.batch.linger_ms / 2) or 1))
        interval = self.cfg.stats_interval_s
        mono = time.monotonic
        next_house = 0.0
        recv = rx.recv
        process = self._process
        while not self.stop:
            k = recv()
            now = mono()
            if k:
                process(rx, k, now)
            else:
                poller.poll(wait_ms)
                now = mono()
            if now >= next_house:
                next_house = now + HOUSEKEEPING_S
                c.housekeeping(now)
                if now >= self._next_report:
                    self._next_report = now + interval
                    self.report()

    def _drain(self, rx) -> None:
        end = time.monotonic() + DRAIN_LIMIT_S
        while time.monotonic() < end:
            try:
                k = rx.recv()
            except OSError:
                return
            if not k:
                return
            self._process(rx, k, time.monotonic())


def worker_main(cfg_json: bytes, index: int, conn, embedded=None) -> None:
    """Entry point of a worker process (multiprocessing, spawn). ``embedded``: see
    make_publisher (a class, pickled by reference)."""
    cfg = msgspec.json.decode(cfg_json, type=CollectConfig)
    logs.setup(cfg.log_level, worker=index, pid=os.getpid())
    try:
        code = Worker(cfg, index, conn, embedded).run()
    except Exception:
        log.exception("worker failed")
        code = 1
    finally:
        try:
            conn.close()
        except OSError:
            pass
    sys.exit(code)


# -- capture replay ---------------------------------------------------------------------------

def replay(cfg: CollectConfig, paths: list[str], kinesis_client=None,
           progress=None, end_marker: bool = True, embedded=None) -> dict:
    """Publish the packets of capture files through the configured transport, in this
    process, with backpressure instead of drops (a file can wait; a socket cannot). Returns
    the final counters (``received`` counts frames read).

    At the end, unless ``end_marker`` is off, every partition gets the end-of-capture marker
    (PacketBatch.end_ns): workers then report their open flows as `mirrorscope analyze` does
    at the end of the file, so a replay gives the same records either way."""
    from collectors.capture import open_capture
    from collectors.source import capture_batches

    readers = [open_capture(p) for p in paths]
    stop = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.append(True))
    cid = cfg.collector_id or f"{socket.gethostname()}:{os.getpid()}"
    c = Components(cfg, cid, live=False, block=True, kinesis_client=kinesis_client,
                   embedded=embedded)
    if c.enricher is not None:
        c.enricher.start()
    c.start_publisher()
    st = c.stats
    check = not c.sources.any
    vnis = c.vnis
    mono = time.monotonic
    next_house = 0.0
    problems: list[str] = []
    end_ns = 0
    try:
        for reader in readers:
            if stop:
                problems.append(f"{reader.name}: not replayed (stopped by a signal)")
                reader.close()
                continue
            for recs in capture_batches(reader, c.decoder):
                if stop:
                    problems.append(f"{reader.name}: replay stopped by a signal")
                    break
                if check or vnis is not None:
                    kept = []
                    for r in recs:
                        if check and not c.sources.allowed(r.mirror_src):
                            st.drops["source_not_allowed"] += 1
                        elif vnis is not None and r.vni not in vnis:
                            st.drops["vni_not_allowed"] += 1
                        else:
                            kept.append(r)
                    recs = kept
                st.decoded += len(recs)
                if recs:
                    last = max(r.ts_ns for r in recs)
                    if last > end_ns:
                        end_ns = last
                now = mono()
                c.pipeline.add(recs, now)
                if now >= next_house:
                    next_house = now + HOUSEKEEPING_S
                    c.housekeeping(now)
            st.received += reader.stats.frames
            problems.extend(reader.stats.problems)
            reader.close()
        if end_marker and end_ns and not stop and c.publisher.name in ("kafka", "kinesis"):
            # Everything first, then the marker: workers report the open flows on it.
            c.pipeline.flush_all()
            c.publisher.flush(cfg.shutdown_timeout_s)
            c.publisher.submit_end(end_ns)
    finally:
        c.shutdown(cfg.shutdown_timeout_s)
    snap = c.sync_stats().snapshot()
    core = c.publisher.core_stats() if c.publisher is not None else None
    if core:
        snap["core"] = core
    snap["problems"] = problems
    snap["collector"] = cid
    return snap
