"""Run `mirrorscope collect` as a real subprocess and read what it says.

The collector logs one JSON object per line on stderr (the health and metrics endpoints with
their ports, "receiving" once per worker) and prints its final counters as JSON on stdout.
``prefix`` runs it elsewhere, e.g. ``["ip", "netns", "exec", "tc4-collector"]``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.waiting import wait_until

MIRRORSCOPE = str(Path(sys.executable).parent / "mirrorscope")


class Collector:
    def __init__(self, args: list[str], workdir: Path, prefix: list[str] | None = None,
                 env: dict | None = None):
        self.args = args
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix or []
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.stdout_path = self.workdir / "collector.out"
        self.stderr_path = self.workdir / "collector.err"
        self.summary: dict | None = None

    def start(self) -> Collector:
        self.proc = subprocess.Popen(
            self.prefix + [MIRRORSCOPE, "collect", *self.args],
            stdout=open(self.stdout_path, "wb"), stderr=open(self.stderr_path, "wb"),
            env=self.env, start_new_session=True)
        return self

    def logs(self) -> list[dict]:
        out = []
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return out
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def events(self, msg: str) -> list[dict]:
        return [e for e in self.logs() if e.get("msg") == msg]

    def wait_ready(self, workers: int = 1, timeout: float = 60.0) -> Collector:
        """Until ``workers`` processes log "receiving" and the health check answers 200."""
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited with {self.proc.returncode}:\n{self.tail()}")
            if len(self.events("receiving")) < workers:
                return False
            code, _ = self.health()
            return code == 200 or code is None
        wait_until(ready, timeout, what=f"{workers} collector process(es) receiving",
                   details=self.tail, error=RuntimeError)
        return self

    def port_of(self, what: str) -> int | None:
        ev = self.events(f"{what} endpoint")
        return ev[0]["port"] if ev else None

    def _get(self, port: int, path: str) -> tuple[int | None, str]:
        url = f"http://127.0.0.1:{port}{path}"
        if self.prefix:  # inside a namespace: ask from there
            r = subprocess.run(self.prefix + ["curl", "-s", "-m", "3", "-o", "-", "-w",
                                              "\n%{http_code}", url],
                               capture_output=True, text=True, timeout=10)
            body, _, code = r.stdout.rpartition("\n")
            return (int(code) if code.strip().isdigit() else None), body
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None, ""

    def health(self) -> tuple[int | None, str]:
        port = self.port_of("health")
        if port is None:
            return None, ""
        return self._get(port, "/healthz")

    def metrics(self) -> str:
        port = self.port_of("metrics")
        code, body = self._get(port, "/metrics")
        assert code == 200, code
        return body

    def wait(self, timeout: float = 120.0) -> dict:
        """Wait for a run that ends by itself (--pcap); return its summary."""
        return self.stop(timeout, signal_first=False)

    def stop(self, timeout: float = 60.0, signal_first: bool = True) -> dict:
        """SIGTERM, wait, and return the final summary it printed."""
        if signal_first and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the parent forwards it to its workers
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise RuntimeError(f"collector did not stop in {timeout:.0f} s:\n{self.tail()}")
        text = self.stdout_path.read_text().strip()
        if not text:
            raise RuntimeError(f"collector printed no summary (exit {self.proc.returncode}):\n"
                               f"{self.tail()}")
        self.summary = json.loads(text.splitlines()[-1])
        return self.summary

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def metric_value(text: str, name: str, **labels) -> float:
    """Sum of a Prometheus metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, lab = head.partition("{")
        if metric != name:
            continue
        got = dict(kv.split("=", 1) for kv in lab.rstrip("}").split(",") if kv) if lab else {}
        got = {k: v.strip('"') for k, v in got.items()}
        if all(got.get(k) == str(v) for k, v in labels.items()):
            total += float(value)
    return total
