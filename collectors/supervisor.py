"""The parent of the worker processes: starts them, restarts one that dies, serves the health
check and the Prometheus metrics, and stops them gracefully.

Metrics, multi-process: each worker keeps plain counters and sends a snapshot to the parent
over a pipe once a second (and a final one when it stops); the parent serves them all on one
port, labelled ``worker="N"`` (N = the worker's slot, stable across restarts: a restarted
worker's counters continue from its predecessor's, so they stay monotonic). Nothing is
shared between processes and no multiprocess directory needs cleaning.

Health (the NLB target group's check): ``GET /healthz`` answers 200 while at least one worker
is receiving and has reported within the last few seconds, else 503; the body is JSON with
each worker's state.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import wait

import msgspec

from collectors.config import CollectConfig, effective_processes
from collectors.stats import (
    DROP_REASONS_ALL,
    PUBLISH_DROP_REASONS,
    Stats,
    add_snapshots,
    reconcile,
)
from collectors.udp import udp_snmp
from collectors.worker import EXIT_FATAL, worker_main

log = logging.getLogger("mirrorscope.collect")

RESTART_BACKOFF_MAX_S = 30.0


def _empty() -> dict:
    return Stats().snapshot()


class Slot:
    def __init__(self, index: int):
        self.index = index
        self.proc = None
        self.conn = None
        self.snap: dict = _empty()
        self.base: dict = _empty()  # final counters of this slot's earlier processes
        self.restarts = 0
        self.ready = False
        self.last_seen = 0.0
        self.final = False
        self.restart_at = 0.0
        self.backoff = 1.0
        self.spawned_at = 0.0

    def totals(self) -> dict:
        return add_snapshots(self.base, {k: v for k, v in self.snap.items()
                                         if k not in ("worker", "pid", "time")})


class Supervisor:
    def __init__(self, cfg: CollectConfig, embedded=None):
        self.cfg = cfg
        self.embedded = embedded  # the embedded-mode publisher class (make_publisher)
        self.n = effective_processes(cfg)
        self.slots = [Slot(i) for i in range(self.n)]
        self.stopping = False
        self.fatal = False
        self._lock = threading.Lock()
        self._ctx = multiprocessing.get_context("spawn")
        self._cfg_json = msgspec.json.encode(cfg)
        self._servers: list[ThreadingHTTPServer] = []
        self.snmp_base = udp_snmp()

    # -- workers ------------------------------------------------------------------------------
    def _spawn(self, slot: Slot) -> None:
        r, w = self._ctx.Pipe(duplex=False)
        p = self._ctx.Process(target=worker_main, args=(self._cfg_json, slot.index, w, self.embedded),
                              name=f"mirrorscope-collect-{slot.index}", daemon=False)
        p.start()
        w.close()
        slot.proc, slot.conn = p, r
        slot.spawned_at = time.monotonic()
        slot.final = False
        slot.ready = False

    def _retire(self, slot: Slot, crashed: bool) -> None:
        """Fold a finished process's counters into the slot's base."""
        snap = {k: v for k, v in slot.snap.items() if k not in ("worker", "pid", "time")}
        if crashed and snap.get("queued_records"):
            pd = dict(snap.get("publish_dropped", {}))
            pd["worker_crash"] = pd.get("worker_crash", 0) + snap["queued_records"]
            snap["publish_dropped"] = pd
            snap["queued_records"] = 0
            snap["queued_bytes"] = 0
        for gauge in ("queued_records", "queued_bytes"):
            snap[gauge] = 0 if crashed else snap.get(gauge, 0)
        snap["ready"] = False
        snap["final"] = False
        slot.base = add_snapshots(slot.base, {k: v for k, v in snap.items()
                                              if k not in ("ready", "final", "collector")})
        slot.snap = _empty()

    def _read(self, timeout: float) -> None:
        conns = [s.conn for s in self.slots if s.conn is not None]
        if not conns:
            time.sleep(timeout)
            return
        for c in wait(conns, timeout):
            slot = next(s for s in self.slots if s.conn is c)
            try:
                snap = c.recv()
            except (EOFError, OSError):
                slot.conn = None
                continue
            with self._lock:
                slot.snap = snap
                slot.ready = bool(snap.get("ready"))
                slot.last_seen = time.monotonic()
                slot.final = bool(snap.get("final"))

    def _check(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            p = slot.proc
            if p is None:
                if not self.stopping and slot.restart_at and now >= slot.restart_at:
                    slot.restart_at = 0.0
                    slot.restarts += 1
                    log.info("restarting worker", extra={"worker": slot.index,
                                                         "restarts": slot.restarts})
                    self._spawn(slot)
                continue
            if p.is_alive():
                continue
            # Collect what the pipe still holds (the final snapshot) before judging.
            while slot.conn is not None and slot.conn.poll():
                try:
                    snap = slot.conn.recv()
                except (EOFError, OSError):
                    break
                slot.snap = snap
                slot.final = bool(snap.get("final"))
            p.join()
            code = p.exitcode
            with self._lock:
                crashed = not slot.final
                self._retire(slot, crashed)
                slot.proc = None
                slot.conn = None
                slot.ready = False
            if self.stopping:
                continue
            if code == EXIT_FATAL:
                log.error("worker cannot run; stopping", extra={"worker": slot.index})
                self.fatal = True
                self.stop()
                continue
            log.error("worker exited unexpectedly", extra={"worker": slot.index,
                                                           "exitcode": code})
            if now - slot.spawned_at > 60.0:  # it had been running fine: restart at once
                slot.backoff = 1.0
            slot.restart_at = now + slot.backoff
            slot.backoff = min(slot.backoff * 2, RESTART_BACKOFF_MAX_S)

    def stop(self, *_args) -> None:
        if self.stopping:
            return
        self.stopping = True
        for s in self.slots:
            if s.proc is not None and s.proc.is_alive():
                try:
                    os.kill(s.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    # -- state for health and metrics -------------------------------------------------------
    def healthy(self) -> tuple[bool, dict]:
        now = time.monotonic()
        fresh = max(5.0, 3 * self.cfg.stats_interval_s + 2)
        workers = []
        ok = False
        with self._lock:
            for s in self.slots:
                alive = s.proc is not None and s.proc.is_alive()
                up = alive and s.ready and now - s.last_seen <= fresh
                ok = ok or up
                workers.append({"worker": s.index, "pid": s.proc.pid if s.proc else None,
                                "alive": alive, "receiving": up, "restarts": s.restarts})
        return ok and not self.stopping, {"status": "ok" if ok and not self.stopping else
                                          "unavailable", "workers": workers}

    def per_worker(self) -> list[tuple[Slot, dict]]:
        with self._lock:
            return [(s, s.totals()) for s in self.slots]

    def totals(self) -> dict:
        t = _empty()
        for _, snap in self.per_worker():
            t = add_snapshots(t, {k: v for k, v in snap.items() if k in t or k == "core"})
        snmp = udp_snmp()
        t["kernel_rcvbuf_errors"] = max(0, snmp.get("RcvbufErrors", 0)
                                        - self.snmp_base.get("RcvbufErrors", 0))
        return t

    # -- HTTP -------------------------------------------------------------------------------
    def _serve(self, address: str | None, port: int, handler) -> ThreadingHTTPServer:
        # Unset: bind where the VXLAN socket listens (the endpoints used to take 0.0.0.0
        # whatever --listen said).
        address = address or self.cfg.listen.address
        cls = _HTTPServer6 if ":" in address else ThreadingHTTPServer
        srv = cls((address, port), handler)
        srv.daemon_threads = True
        t = threading.Thread(target=srv.serve_forever, name=f"http-{port}", daemon=True)
        t.start()
        self._servers.append(srv)
        return srv

    def start_http(self) -> None:
        sup = self
        hc, mc = self.cfg.health, self.cfg.metrics

        class Health(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] != hc.path:
                    self.send_error(404)
                    return
                ok, body = sup.healthy()
                data = json.dumps(body).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        if hc.enabled:
            srv = self._serve(hc.address, hc.port, Health)
            self.health_port = srv.server_address[1]
            log.info("health endpoint", extra={"address": srv.server_address[0],
                                               "port": self.health_port,
                                               "path": hc.path})
        if mc.enabled:
            from prometheus_client import CollectorRegistry
            from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

            registry = CollectorRegistry()
            registry.register(_MetricsCollector(self))

            class Metrics(BaseHTTPRequestHandler):
                def do_GET(self):
                    if self.path.split("?")[0] != mc.path:
                        self.send_error(404)
                        return
                    data = generate_latest(registry)
                    self.send_response(200)
                    self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

                def log_message(self, *a):
                    pass

            srv = self._serve(mc.address, mc.port, Metrics)
            self.metrics_port = srv.server_address[1]
            log.info("metrics endpoint", extra={"address": srv.server_address[0],
                                                "port": self.metrics_port,
                                                "path": mc.path})

    # -- main ---------------------------------------------------------------------------------
    def run(self) -> dict:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        for s in self.slots:
            self._spawn(s)
        self.start_http()
        reporter = None
        if self.cfg.cloudwatch.enabled:
            from collectors.cloudwatch import CloudWatchReporter
            reporter = CloudWatchReporter(self.cfg.cloudwatch, self.totals)
            reporter.start()
        log.info("collector started", extra={"processes": self.n,
                                             "transport": self.cfg.transport})
        deadline = None
        while True:
            self._read(0.25)
            self._check()
            if self.stopping:
                if deadline is None:
                    deadline = time.monotonic() + self.cfg.shutdown_timeout_s + 10.0
                if all(s.proc is None for s in self.slots):
                    break
                if time.monotonic() > deadline:
                    for s in self.slots:
                        if s.proc is not None and s.proc.is_alive():
                            log.error("worker did not stop in time; killing",
                                      extra={"worker": s.index})
                            s.proc.kill()
                    deadline = time.monotonic() + 5.0
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        if reporter is not None:
            reporter.stop()
        totals = self.totals()
        problems = reconcile(totals)
        summary = {
            "totals": totals,
            "workers": [{"worker": s.index, "restarts": s.restarts, **snap}
                        for s, snap in self.per_worker()],
            "reconciled": not problems,
            "problems": problems,
        }
        log.info("collector stopped", extra={"received": totals["received"],
                                             "published": totals["published"],
                                             "reconciled": not problems})
        return summary


class _HTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _MetricsCollector:
    """Renders the supervisor's view of every worker in Prometheus' data model."""

    def __init__(self, sup: Supervisor):
        self.sup = sup

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        rows = self.sup.per_worker()
        P = "mirrorscope_collector_"

        def counter(name, doc, key):
            m = CounterMetricFamily(P + name, doc, labels=["worker"])
            for s, snap in rows:
                m.add_metric([str(s.index)], snap.get(key, 0))
            return m

        yield counter("datagrams_received", "VXLAN datagrams read from the socket (capture "
                      "frames in replays).", "received")
        yield counter("records_decoded", "Datagrams decoded into packet records.", "decoded")
        m = CounterMetricFamily(P + "datagrams_dropped", "Datagrams dropped before or while "
                                "decoding, by reason.", labels=["worker", "reason"])
        for s, snap in rows:
            for r in DROP_REASONS_ALL:
                m.add_metric([str(s.index), r], snap.get("drops", {}).get(r, 0))
        yield m
        yield counter("records_filtered", "Records rejected by the local mirror filter.",
                      "filtered_out")
        yield counter("records_published", "Records the destination acknowledged.", "published")
        m = CounterMetricFamily(P + "records_publish_dropped", "Decoded records that did not "
                                "reach the destination, by reason.", labels=["worker", "reason"])
        for s, snap in rows:
            for r in PUBLISH_DROP_REASONS:
                m.add_metric([str(s.index), r], snap.get("publish_dropped", {}).get(r, 0))
        yield m
        yield counter("publish_errors", "Failed publish attempts (retried ones included).",
                      "publish_errors")
        yield counter("batches_published", "Batches (Kafka messages, Kinesis user records) "
                      "acknowledged.", "batches_published")
        yield counter("bytes_published", "Encoded bytes acknowledged.", "bytes_published")
        m = CounterMetricFamily(P + "payload_records", "Records with transport payload, by what "
                                "the payload policy kept.", labels=["worker", "kept"])
        for s, snap in rows:
            for kept, key in (("full", "payload_full"), ("cut", "payload_cut"),
                              ("headers_only", "payload_headers_only")):
                m.add_metric([str(s.index), kept], snap.get(key, 0))
        yield m
        yield counter("kernel_socket_drops", "Datagrams the kernel dropped at this worker's "
                      "socket (receive buffer full).", "kernel_drops")
        yield counter("enrichment_misses", "Lookups of VNIs with no known mirror session.",
                      "enrichment_misses")
        for name, doc, key in (("queue_records", "Records batched or waiting for the "
                                "destination.", "queued_records"),
                               ("queue_bytes", "Encoded bytes waiting for the destination.",
                                "queued_bytes")):
            g = GaugeMetricFamily(P + name, doc, labels=["worker"])
            for s, snap in rows:
                g.add_metric([str(s.index)], snap.get(key, 0))
            yield g
        g = GaugeMetricFamily(P + "worker_up", "1 while the worker is receiving.",
                              labels=["worker"])
        for s, _ in rows:
            g.add_metric([str(s.index)], 1 if s.ready else 0)
        yield g
        yield_c = CounterMetricFamily(P + "worker_restarts", "Worker processes restarted.",
                                      labels=["worker"])
        for s, _ in rows:
            yield_c.add_metric([str(s.index)], s.restarts)
        yield yield_c
        snmp = udp_snmp()
        c = CounterMetricFamily(P + "kernel_udp_rcvbuf_errors", "The network namespace's UDP "
                                "RcvbufErrors (all sockets), since the collector started.")
        c.add_metric([], max(0, snmp.get("RcvbufErrors", 0)
                             - self.sup.snmp_base.get("RcvbufErrors", 0)))
        yield c
