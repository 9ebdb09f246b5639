"""Run rendered containers (tests/rehearsal/pods.py) as local processes the way their pods run:
the rendered command, arguments and environment; the ConfigMap files and emptyDirs at their
mount paths; the pod's user, group and read-only root (tests/rehearsal/podrun.sh).

What a test may change, and only through the environment, is what a real cluster's DNS and
identity would make different: service endpoints (Kafka bootstrap, Redis URL, the AWS endpoint),
the pod-local ports (a pod's network namespace keeps them apart in a cluster; here all pods
share the host's loopback), and the AWS credentials IRSA would inject. ``OVERRIDABLE`` lists
them; anything else a test tries to change is refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.rehearsal.pods import Container
from tests.services.kafka_service import free_port

HERE = Path(__file__).resolve().parent
PODRUN = HERE / "podrun.sh"
VENV_BIN = Path(sys.executable).parent

OVERRIDABLE = {
    "MIRRORSCOPE_KAFKA_BOOTSTRAP", "MIRRORSCOPE_REDIS_URL", "AWS_ENDPOINT_URL",
    "MIRRORSCOPE_HEALTH_PORT", "MIRRORSCOPE_METRICS_PORT", "MIRRORSCOPE_KAFKA_CA",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
}


def require_root() -> None:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        raise RuntimeError("the rehearsal runs pods in mount namespaces as their own user: it "
                           "needs root and util-linux's unshare and setpriv")


class Pod:
    def __init__(self, c: Container, name: str, workdir: Path, overrides: dict[str, str],
                 extra_args: list[str] | None = None, tmp_files=()):
        bad = set(overrides) - OVERRIDABLE
        if bad:
            raise ValueError(f"the rehearsal may not change {sorted(bad)}: only endpoints, "
                             "pod-local ports and injected credentials")
        self.c, self.name = c, name
        self.dir = Path(workdir) / name
        self.overrides = dict(overrides)
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.overrides.setdefault("MIRRORSCOPE_HEALTH_PORT", str(self.health_port))
        self.overrides.setdefault("MIRRORSCOPE_METRICS_PORT", str(self.metrics_port))
        self.extra_args = list(extra_args or [])
        self.tmp_files = [Path(f) for f in tmp_files]  # copied into the pod's /tmp emptyDir
        self.proc: subprocess.Popen | None = None

    def _lay_out(self) -> None:
        mounts = self.dir / "mounts"
        if self.dir.exists():
            shutil.rmtree(self.dir)
        mounts.mkdir(parents=True)
        uid = self.c.run_as_user if self.c.run_as_user is not None else 0
        gid = self.c.run_as_group if self.c.run_as_group is not None else uid
        n = 0
        for path, files in self.c.files.items():
            d = mounts / str(n)
            d.mkdir()
            os.chmod(d, 0o755)
            for fname, text in files.items():
                f = d / fname
                f.write_text(text)
                # as the kubelet lays them out: the volume's mode, group fsGroup
                os.chmod(f, self.c.file_modes.get(path, 0o644))
                if self.c.fs_group is not None:
                    os.chown(f, 0, self.c.fs_group)
            (mounts / f"{n}.path").write_text(path)
            Path(path).mkdir(parents=True, exist_ok=True)  # the mount point, as the image has it
            n += 1
        for path in self.c.empty_dirs:
            d = mounts / str(n)
            d.mkdir()
            os.chown(d, uid, gid)  # fsGroup makes an emptyDir the pod's
            (mounts / f"{n}.path").write_text(path)
            Path(path).mkdir(parents=True, exist_ok=True)
            if path == "/tmp":
                hook = d / ".rehearsal"
                hook.mkdir()
                shutil.copy(HERE / "envhook" / "sitecustomize.py", hook)
                os.chown(hook, uid, gid)
                self.env_read = hook / "env-read.txt"
                for f in self.tmp_files:
                    shutil.copy(f, d / f.name)
                    os.chown(d / f.name, uid, gid)
            n += 1
        self.uid, self.gid = uid, gid

    def env(self) -> dict[str, str]:
        env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "PYTHONPATH": "/tmp/.rehearsal", **self.c.env, **self.overrides}
        return env

    def start(self) -> "Pod":
        self._lay_out()
        cmd = ["unshare", "--mount", "--propagation", "private", str(PODRUN), str(self.dir),
               str(self.uid), str(self.gid), "1" if self.c.read_only_root else "0", "--",
               *self.c.command, *self.c.args, *self.extra_args]
        self.log = self.dir / "output.log"
        self.proc = subprocess.Popen(cmd, env=self.env(), stdin=subprocess.DEVNULL,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def get(self, path: str, port: int | None = None) -> tuple[int | None, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port or self.health_port}{path}",
                                        timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None, ""

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the pod's own readiness probe (the rendered path on the health port) says 200."""
        path = self.c.readiness_path or "/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            if self.get(path)[0] == 200:
                return
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready on {path} in {timeout:.0f} s:\n{self.tail()}")

    def variables_read(self) -> set[str]:
        try:
            return set(self.env_read.read_text().split())
        except (OSError, AttributeError):
            return set()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, as the kubelet sends at a rollout or scale-in; SIGKILL after the grace."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)  # the kubelet signals the container's PID 1 only
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
                raise RuntimeError(f"{self.name} ignored SIGTERM for {timeout:.0f} s:\n{self.tail()}")
        return p.returncode
