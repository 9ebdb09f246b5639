"""Fixtures of the deployment tests (terraform/, helm/, the automation Lambda).

Tools come from .ci/cache (installed by .ci/install-deploy-tools.sh) or PATH; deploy_helpers.py
finds them and fails, never skips, when one is missing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

# The test modules import deploy_helpers (a unique name, so it cannot clash with other conftests).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_helpers import CHART, NAMESPACE, NOTES, require_module, require_tool, run  # noqa: E402

# --------------------------------------------------------------------------------------------
# helm
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def helm() -> Path:
    return require_tool("helm")


@pytest.fixture(scope="session")
def helm_template(helm):
    """Render the chart: helm_template(*args) -> list of manifest dicts (cached per args)."""
    yaml = require_module("yaml")
    cache: dict[tuple[str, ...], list[dict]] = {}

    def render(*args: str) -> list[dict]:
        if args not in cache:
            out = run([helm, "template", "ms", CHART, "--namespace", NAMESPACE, *args]).stdout
            cache[args] = [d for d in yaml.safe_load_all(out) if d]
        return cache[args]

    return render


# --------------------------------------------------------------------------------------------
# moto server (a real subprocess on a free loopback port)
# --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    exe = require_tool("moto_server", extra_dirs=(Path(sys.executable).parent,))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited {proc.returncode}: {proc.stdout.read()}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("moto_server did not answer within 30 s", pytrace=False)
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
def aws(moto_server, monkeypatch) -> str:
    """A clean moto backend, and boto3 pointed at it through the environment (as the Lambda's
    boto3.client("ec2") would be in AWS). Yields the endpoint URL."""
    req = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return moto_server


def pytest_terminal_summary(terminalreporter):
    if NOTES:
        terminalreporter.section("deploy checks: tools used")
        for line in dict.fromkeys(NOTES):
            terminalreporter.write_line(line)
