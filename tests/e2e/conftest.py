"""The mirror lab (../shared/labs/mirror-lab.sh): real kernel VXLAN and tc mirroring between
network namespaces. These tests need root and `ip netns`; CI runs as root, so they run there
and fail (never skip) with a clear message where they cannot."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab_env import PREFIX, Lab, find_lab, serve_http  # noqa: E402


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("the e2e tests need root (network namespaces); CI runs them as root",
                    pytrace=False)
    for tool in ("ip", "tc", "ethtool", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"the e2e tests need `{tool}` (.ci/setup.sh installs it)", pytrace=False)
    lab = Lab(find_lab(), PREFIX)
    lab._script("down")  # leftovers of a killed run
    up = lab._script("up")
    if up.returncode != 0:
        lab._script("down")
        pytest.fail(f"mirror lab did not come up: {up.stderr}", pytrace=False)
    try:
        yield lab
    finally:
        lab._script("down")


@pytest.fixture(scope="module")
def http_server(lab, tmp_path_factory) -> Iterator[str]:
    """A real HTTP server (Python's http.server) on 198.18.0.1:80 in the mirrored namespace."""
    root = tmp_path_factory.mktemp("www")
    (root / "index.html").write_text("<html><body>" + "mirrorscope " * 20 + "</body></html>\n")
    (root / "big.bin").write_bytes(os.urandom(64 * 1024))
    with serve_http(lab, root) as url:
        yield url
