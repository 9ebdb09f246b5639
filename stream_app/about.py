"""What `mirrorscope --version` reports: the version, whether the C fast paths are active, and
which extras are installed. Kept apart from cli.py so that asking costs one small import."""

from __future__ import annotations

import importlib
import importlib.util
import sys

# The compiled halves of the two hot loops; each has a pure-Python reference it falls back to
# (same results, several times slower) when it was not built, e.g. on a machine without gcc.
FAST_PATHS = {
    "decoder": ("collectors._fastdecode",),
    "HTTP": ("stream_app._fasthttp", "stream_app._fastconn"),  # the head parser, the connection
}

# One importable module per extra (pyproject.toml [project.optional-dependencies]) that shows
# whether it is installed.
EXTRA_PROBES = {
    "stream": ("faust", "kafka", "redis"),
    "aws": ("boto3", "pyarrow"),
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as dist_version
    try:
        return dist_version("mirrorscope")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def fast_paths() -> dict[str, bool]:
    """name -> whether its C extension imports (an import, not a file check: a stale or
    mismatched .so that fails to load counts as inactive, as it would at run time)."""
    active = {}
    for name, modules in FAST_PATHS.items():
        try:
            for module in modules:
                importlib.import_module(module)
            active[name] = True
        except ImportError:
            active[name] = False
    return active


def _module_names() -> list[str]:
    return [m for ms in FAST_PATHS.values() for m in ms]


def extras() -> dict[str, bool]:
    return {extra: all(importlib.util.find_spec(m) is not None for m in mods)
            for extra, mods in EXTRA_PROBES.items()}


def report() -> str:
    fast = fast_paths()
    if all(fast.values()):
        c = "C fast paths: active (" + ", ".join(_module_names()) + ")"
    elif any(fast.values()):
        c = "C fast paths: partly active (" + ", ".join(
            f"{n} {'C' if on else 'pure Python'}" for n, on in fast.items()) + ")"
    else:
        c = "C fast paths: inactive (pure Python: the extensions were not built; see README)"
    ext = ", ".join(f"[{e}] {'installed' if on else 'not installed'}" for e, on in extras().items())
    return (f"mirrorscope {version()}\n{c}\nextras: {ext}\n"
            f"Python {sys.version.split()[0]} ({sys.executable})")
