"""`mirrorscope collect --embedded`: the collector's batches go straight into the stream core
in the collector's own process and its results to a folder, as `mirrorscope analyze` writes
them. The collector does not import this: `mirrorscope collect` hands this class to it
(collectors.publishers.make_publisher's ``embedded``), so the dependency points from the
stream app to the collector and never back.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from collectors.publishers import Publisher
from collectors.stats import Stats


log = logging.getLogger("mirrorscope.collect.embedded")


class EmbeddedPublisher(Publisher):
    """Feeds the stream core in this process (stream_app.livemode: the options and outputs of
    `mirrorscope analyze`, written live) with VNI enrichment of flow records and alerts."""

    name = "embedded"

    def __init__(self, cfg, stats: Stats, collector_id: str, enricher=None,
                 live: bool = True):
        super().__init__(stats, collector_id, enricher)
        from stream_app.livemode import LiveAnalysis

        self.cfg = cfg
        self.live = live
        self.analysis = LiveAnalysis(cfg, stats, live=live)
        self.core = self.analysis.core
        self.out_dir = Path(cfg.out_dir)
        self.outputs = self.analysis.outputs
        self._next_tick = 0.0
        self._errors_logged = 0
        self.flows_written = 0

    def _write(self, results) -> None:
        if self.enricher is not None:
            for f in results.flows:
                self.enricher.fill_flow(f)
            for a in results.alerts:  # the mirrored ENI of the alert's VNI
                if a.interface_id is None and a.vni is not None:
                    info = self.enricher.get(a.vni)
                    if info is not None:
                        a.interface_id = info.interface_id
        self.flows_written += len(results.flows)
        self.outputs.write(results)

    def submit(self, p, key, records, est_bytes, block=False):
        self._write(self.core.process(records))
        self.stats.published += len(records)
        self.stats.batches_published += 1

    def poll(self, now: float) -> None:
        ended = False
        if now >= self._next_tick:
            self._next_tick = now + self.cfg.tick_s
            res = self.core.tick(time.time_ns() if self.live else None)
            self._write(res)
            self._log_errors()
            ended = bool(res)
        # Flows that timed out are written at once; records that came with packets within
        # flush_s (the housekeeping runs every few ms).
        self.analysis.poll(flush=ended)

    def _log_errors(self) -> None:
        """A warning (at most once a tick) when the core caught errors since the last one:
        they are counted, not fatal, but someone should look."""
        st = self.core.stats()
        n = st["packet_errors"] + st["l7_errors"] + st["detector_errors"]
        if n > self._errors_logged:
            log.warning("stream core caught errors", extra={
                "packet_errors": st["packet_errors"], "l7_errors": st["l7_errors"],
                "detector_errors": st["detector_errors"], "first": self.core.errors[:3]})
            self._errors_logged = n

    def core_stats(self) -> dict:
        st = self.core.stats()
        # Flat (the supervisor sums snapshots one level deep): http_tag_<tag> = count.
        for k, v in sorted(self.outputs.http_summary.tags.items()):
            st[f"http_tag_{k}"] = v
        return st

    def close(self, timeout: float = 0.0) -> None:
        self._write(self.core.finish())
        self._log_errors()
        self.analysis.close()
