"""A Redis server on this machine: Debian's ``/usr/bin/redis-server`` on a free loopback port,
with nothing persisted (``--save '' --appendonly no``). The test suite and
``mirrorscope services up`` use it.

    r = LocalRedis(workdir); r.start(); redis.Redis.from_url(r.url).ping(); r.stop(); r.start()

The server is a child process in its own session (not ``--daemonize``), so ``stop()`` and
``kill()`` reach it by its pid. ``stop()``/``start()`` keep the port (and the URL); the data
does not survive, since nothing is saved.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from .kafka_service import free_port, port_open

__all__ = ["LocalRedis", "redis_server_exe"]

REDIS_SERVER = "/usr/bin/redis-server"


def redis_server_exe() -> str | None:
    """Debian's /usr/bin/redis-server, else one on PATH."""
    if Path(REDIS_SERVER).exists():
        return REDIS_SERVER
    return shutil.which("redis-server")


class LocalRedis:
    kind = "local"
    controllable = True

    def __init__(self, workdir: Path, port: int | None = None, password: str | None = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "redis.pid"

    def command(self) -> list[str]:
        exe = redis_server_exe()
        if exe is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        cmd = [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
               "--appendonly", "no", "--dir", str(self.workdir), "--pidfile", str(self.pid_path),
               "--logfile", str(self.log_path)]
        if self.password:
            # In a file only we can read, never on the command line: `ps` shows that to all.
            cmd.insert(1, str(self._auth_conf()))
        return cmd

    def _auth_conf(self) -> Path:
        """redis.conf holding ``requirepass`` (mode 0600), read as the first argument."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "auth.conf"
        esc = self.password.replace("\\", "\\\\").replace('"', '\\"')
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f'requirepass "{esc}"\n')
        return path

    def start(self, timeout: float = 15.0) -> None:
        if self.running():
            return
        cmd = self.command()
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = open(self.workdir / "stdout.log", "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"redis-server exited with {code}: {self._log_tail()}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {timeout:.0f} s; "
                           f"see {self.log_path}")

    def ping(self) -> bool:
        """One PING, no retries (redis-py 8 retries a refused connection for ~5 s)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        c = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                        socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0))
        try:
            return bool(c.ping())
        except redis.exceptions.AuthenticationError:
            raise RuntimeError(f"a Redis on port {self.port} refused the password") from None
        except redis.exceptions.RedisError:
            return False
        finally:
            c.close()

    def _log_tail(self, lines: int = 5) -> str:
        for p in (self.log_path, self.workdir / "stdout.log"):
            try:
                text = p.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                return " | ".join(text.splitlines()[-lines:])
        return f"no log in {self.workdir}"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; waits until the port is closed."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: an abrupt loss of the server (the port closes, its data is gone)."""
        self._end(signal.SIGKILL, 5.0)

    def _end(self, sig: int, timeout: float) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.proc = None
        deadline = time.monotonic() + 5
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None
