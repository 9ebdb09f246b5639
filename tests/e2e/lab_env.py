"""The mirror lab's addresses and a handle to drive it (shared by the e2e conftest and tests;
a unique module name so it never clashes with another conftest's helpers)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
PREFIX = os.environ.get("MIRRORSCOPE_E2E_PREFIX", "tc4-")  # distinct from other lab users
VNI = 1234
SERVER = "198.18.0.1"
CLIENT = "198.18.0.2"
MIRROR_SRC = "198.18.1.1"
CMD_TIMEOUT = 30


def find_lab() -> Path:
    for cand in (os.environ.get("MIRROR_LAB"), ROOT.parent / "shared" / "labs" / "mirror-lab.sh"):
        if cand and Path(cand).is_file():
            return Path(cand)
    pytest.fail("mirror lab recipe not found: expected ../shared/labs/mirror-lab.sh beside the "
                "repository (or set MIRROR_LAB)", pytrace=False)


@dataclass
class Lab:
    script: Path
    prefix: str

    @property
    def src(self) -> str:
        return f"{self.prefix}src"

    @property
    def client(self) -> str:
        return f"{self.prefix}client"

    @property
    def collector(self) -> str:
        return f"{self.prefix}collector"

    def ns(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", name]

    def run(self, ns: str, *cmd: str, timeout: float = CMD_TIMEOUT, check: bool = True):
        return subprocess.run(self.ns(ns) + list(cmd), capture_output=True, text=True,
                              timeout=timeout, check=check)

    def _script(self, action: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PREFIX": self.prefix, "VNI": str(VNI)}
        return subprocess.run(["bash", str(self.script), action], env=env, capture_output=True,
                              text=True, timeout=60)


@contextmanager
def serve_http(lab: Lab, root: Path, bind: str = SERVER) -> Iterator[str]:
    """A real HTTP server (Python's http.server) on port 80 in the mirrored namespace, serving
    ``root``; yields its URL once curl from the client gets a 200."""
    proc = subprocess.Popen(lab.ns(lab.src) + ["python3", "-m", "http.server", "80", "--bind",
                                               bind, "--directory", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"HTTP server in {lab.src} exited with {proc.returncode}", pytrace=False)
            r = lab.run(lab.client, "curl", "-s", "-o", "/dev/null", "-m", "2", "-w",
                        "%{http_code}", f"http://{SERVER}/", check=False)
            return r.stdout.strip() == "200"
        wait_until(answers, 15, what=f"the HTTP server in {lab.src} to answer")
        yield f"http://{SERVER}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def lab_up(prefix: str, tools: tuple[str, ...]) -> Iterator[Lab]:
    """The mirror lab under ``prefix``, up for the duration (leftovers of a killed run are
    cleared first); fails, never skips, without root or one of ``tools``."""
    if os.geteuid() != 0:
        pytest.fail("the e2e tests need root (network namespaces); CI runs them as root",
                    pytrace=False)
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"the e2e tests need `{tool}` (.ci/setup.sh installs it)", pytrace=False)
    lab = Lab(find_lab(), prefix)
    lab._script("down")
    up = lab._script("up")
    if up.returncode != 0:
        lab._script("down")
        pytest.fail(f"mirror lab did not come up: {up.stderr}", pytrace=False)
    try:
        yield lab
    finally:
        lab._script("down")
