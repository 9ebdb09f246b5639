"""Shared by the deployment tests: paths, tool lookup, running commands.

Tools come from .ci/cache (installed by .ci/install-deploy-tools.sh) or PATH. A missing tool FAILS
the test with the command that installs it: these checks are the issue's acceptance, so they are
never skipped silently.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("DEPLOY_TOOLS_CACHE", REPO / ".ci" / "cache"))
CHART = REPO / "helm" / "mirrorscope"
TERRAFORM = REPO / "terraform"
INSTALL_HINT = ("run `bash .ci/install-deploy-tools.sh` (installs helm, hclfmt and checkov into .ci/cache/, "
                "and the test packages it needs into the Python it finds)")

# Lines for the end of the pytest run: which checks ran with which tool (conftest prints them).
NOTES: list[str] = []

# Namespace the chart is rendered into: an install names its namespace; "default" is not ours to use.
NAMESPACE = "mirrorscope"


def find_tool(*names: str, extra_dirs: tuple[Path, ...] = ()) -> Path | None:
    """First of `names` found in .ci/cache/bin, extra_dirs, then PATH."""
    for name in names:
        for d in (CACHE / "bin", *extra_dirs):
            p = d / name
            if p.is_file() and os.access(p, os.X_OK):
                return p
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def require_tool(*names: str, extra_dirs: tuple[Path, ...] = (), hint: str = INSTALL_HINT) -> Path:
    tool = find_tool(*names, extra_dirs=extra_dirs)
    if tool is None:
        pytest.fail(f"{' or '.join(names)} not found in {CACHE / 'bin'} or PATH: {hint}", pytrace=False)
    return tool


def require_module(name: str) -> ModuleType:
    """Import a test dependency (from the project's `.[test]` extra), or fail saying how to get it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        pytest.fail(f"Python module {name} is missing ({e}): {INSTALL_HINT}, or `pip install -e '.[test]'`",
                    pytrace=False)


def run(cmd: list[str | Path], *, env: dict[str, str] | None = None, cwd: Path = REPO,
        timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"`{' '.join(map(str, cmd))}` exited {proc.returncode}\n"
                    f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}", pytrace=False)
    return proc


# --------------------------------------------------------------------------------------------
# python-hcl2 output, normalised (v8 keeps quotes around names and strings, v4-v7 do not)
# --------------------------------------------------------------------------------------------

def unquote(s):
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


def norm(obj):
    if isinstance(obj, dict):
        return {unquote(k): norm(v) for k, v in obj.items() if not str(k).startswith("__")}
    if isinstance(obj, list):
        return [norm(v) for v in obj]
    return unquote(obj)


@functools.cache
def parse(path: Path) -> dict:
    with path.open() as f:
        return norm(require_module("hcl2").load(f))


def blocks(root: Path) -> dict[str, list]:
    """All top-level blocks of a module directory, merged over its .tf files."""
    merged: dict[str, list] = {}
    for tf in sorted(root.glob("*.tf")):
        for kind, items in parse(tf).items():
            merged.setdefault(kind, []).extend(items if isinstance(items, list) else [items])
    return merged


def named(items: list[dict]) -> dict[str, dict]:
    return {name: body for item in items for name, body in item.items()}


def two_level(items: list[dict]) -> set[tuple[str, str]]:
    return {(t, n) for item in items for t, by_name in item.items() for n in by_name}
