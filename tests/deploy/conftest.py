"""Fixtures of the deployment tests (terraform/, helm/, the automation Lambda).

Tools come from .ci/cache (installed by .ci/install-deploy-tools.sh) or PATH; deploy_helpers.py
finds them and fails, never skips, when one is missing.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.moto_service import MotoServer

# The test modules import deploy_helpers (a unique name, so it cannot clash with other conftests).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_helpers import CHART, NAMESPACE, NOTES, require_module, require_tool, run  # noqa: E402

DEFAULT_VALUES = CHART / "ci" / "default-values.yaml"

# --------------------------------------------------------------------------------------------
# helm
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def helm() -> Path:
    return require_tool("helm")


@pytest.fixture(scope="session")
def helm_template(helm):
    """Render the chart: helm_template(*args) -> list of manifest dicts (cached per args).
    Every render starts from ci/default-values.yaml (the defaults plus a generated state key,
    without which the chart refuses to render: test_deploy_secure_defaults.py); ``args`` override it."""
    yaml = require_module("yaml")
    cache: dict[tuple[str, ...], list[dict]] = {}

    def render(*args: str) -> list[dict]:
        if args not in cache:
            out = run([helm, "template", "ms", CHART, "--namespace", NAMESPACE,
                       "-f", str(DEFAULT_VALUES), *args]).stdout
            cache[args] = [d for d in yaml.safe_load_all(out) if d]
        return cache[args]

    return render


# --------------------------------------------------------------------------------------------
# moto server (a real subprocess on a free loopback port)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    server = MotoServer()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


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
