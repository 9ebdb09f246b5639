"""The one health and metrics server of the stream workers (`mirrorscope worker` and
`mirrorscope kinesis-worker`): aiohttp in the worker's event loop.

    /healthz   200 while the process and its event loop answer (liveness)
    /readyz    200 when ready, else 503; the body says why (``problems``) and holds the
               worker's status and counters (``stats``)
    /metrics   Prometheus text of the declared metrics (runtime/metrics.py)

on the health port; ``/metrics`` alone also on the metrics port when it is another one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("mirrorscope.health")


class HealthServer:
    def __init__(self, bind: str, health_port: int | None, metrics_port: int | None,
                 status: Callable[[], dict], metrics: Callable[[], bytes]):
        self.bind = bind
        self.health_port = health_port
        self.metrics_port = metrics_port
        self.status = status
        self.metrics = metrics
        self.ports: list[int] = []
        self._runners: list = []

    async def start(self) -> None:
        from aiohttp import web

        async def healthz(request):
            return web.json_response({"status": "ok"})

        async def readyz(request):
            body = self.status()
            return web.json_response(body, status=200 if body.get("ready") else 503)

        async def prom(request):
            return web.Response(body=self.metrics(),
                                headers={"Content-Type": "text/plain; version=0.0.4"})

        specs = []
        if self.health_port is not None:
            specs.append((self.health_port, [("/healthz", healthz), ("/readyz", readyz),
                                             ("/metrics", prom)]))
        if self.metrics_port is not None and self.metrics_port != self.health_port:
            specs.append((self.metrics_port, [("/metrics", prom)]))
        for port, routes in specs:
            app = web.Application()
            for path, fn in routes:
                app.router.add_get(path, fn)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.bind, port)
            await site.start()
            bound = port
            for addr in runner.addresses:  # the port chosen when asked for 0
                bound = addr[1]
            self.ports.append(bound)
            log.info("serving", extra={"bind": self.bind, "port": bound,
                                       "paths": [p for p, _ in routes]})
            self._runners.append(runner)

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for r in runners:
            await r.cleanup()
