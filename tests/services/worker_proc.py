"""Run `mirrorscope worker` as a real subprocess: readiness, owned partitions and counters from
its /readyz and /metrics endpoints; SIGTERM or SIGKILL to stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from schemas.kinds import NAMES
from tests.services.kafka_service import free_port
from tests.waiting import wait_until

MIRRORSCOPE = str(Path(sys.executable).parent / "mirrorscope")


class Worker:
    def __init__(self, name: str, workdir: Path, bootstrap: str, redis_url: str, topic: str,
                 group: str, results: dict[str, str], extra: list[str] | None = None):
        self.name = name
        self.workdir = Path(workdir) / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = [
            "worker", "--bootstrap", bootstrap, "--redis-url", redis_url,
            "--packet-topic", topic, "--group", group,
            *[a for k in NAMES for a in (f"--topic-{k}", results[k])],
            "--web-port", str(self.port), "--web-bind", "127.0.0.1",
            "--datadir", str(self.workdir / "faust"), "--session-timeout", "6", "--log-level", "debug",
            *(extra or []),
        ]
        self.env = {**os.environ, "MIRRORSCOPE_STATE_KEY": "test-state-key"}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        self.err = self.workdir / "worker.err"
        self.proc = subprocess.Popen([MIRRORSCOPE, *self.args], stdout=open(self.workdir / "worker.out", "ab"),
                                     stderr=open(self.err, "ab"), env=self.env,
                                     start_new_session=True)
        return self

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.err.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def get(self, path: str) -> tuple[int | None, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None, ""

    def ready(self) -> dict | None:
        code, body = self.get("/readyz")
        return json.loads(body) if code == 200 else None

    def wait_ready(self, timeout: float = 60.0) -> dict:
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            return self.ready()
        return wait_until(ready, timeout, interval=0.2, what=f"{self.name} to be ready",
                          details=self.tail, error=RuntimeError)

    def metrics(self) -> dict[str, float]:
        code, body = self.get("/metrics")
        assert code == 200, (code, self.tail())
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def stats(self) -> dict:
        r = self.ready()
        return r["stats"] if r else {}

    def kill(self) -> None:
        """SIGKILL: no checkpoint, no commit, no goodbye to the group."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"{self.name} did not stop in {timeout:.0f} s:\n{self.tail()}")
        return self.proc.returncode
