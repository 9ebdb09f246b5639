"""The mirror lab (../shared/labs/mirror-lab.sh): real kernel VXLAN and tc mirroring between
network namespaces. These tests need root and `ip netns`; CI runs as root, so they run there
and fail (never skip) with a clear message where they cannot."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab_env import PREFIX, Lab, lab_up, serve_http  # noqa: E402


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_up(PREFIX, ("ip", "tc", "ethtool", "curl")) as lab:
        yield lab


@pytest.fixture(scope="module")
def http_server(lab, tmp_path_factory) -> Iterator[str]:
    """A real HTTP server (Python's http.server) on 198.18.0.1:80 in the mirrored namespace."""
    root = tmp_path_factory.mktemp("www")
    (root / "index.html").write_text("<html><body>" + "mirrorscope " * 20 + "</body></html>\n")
    (root / "big.bin").write_bytes(os.urandom(64 * 1024))
    with serve_http(lab, root) as url:
        yield url
