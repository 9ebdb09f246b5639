"""The dependency rules of docs/distributed.md ("Layout"), checked on the source: the import
graph of collectors/, schemas/ and stream_app/ (every import, at module level or inside a
function: a lazy import is still a dependency) has no cycle; collectors/ and schemas/ never
import stream_app; the core imports neither adapters, runtime, state, sinks nor the CLI; no
module reaches into a private attribute of faust, aiokafka or mode; and `mirrorscope analyze`
starts without loading the broker, Redis or AWS client libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("collectors", "schemas", "stream_app")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            if "test" in p.name.split("_")[0]:
                continue
            out[_module_name(p)] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from a.b import c`` names a.b.c when that is a
    module, else a.b)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".") if is_pkg else name.split(".")[:-1]
                parent = parent[:len(parent) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` of a module: a.b.c; else its package
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    src = _sources()
    known = set(src)
    return {name: _imports(name, path, known) for name, path in src.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path a -> ... -> a), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = GREY
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if color.get(m) == GREY:
                return stack[stack.index(m):] + [m]
            if color.get(m) == WHITE:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        color[n] = BLACK
        return None

    for n in sorted(graph):
        if color[n] == WHITE:
            found = visit(n)
            if found:
                return found
    return None


def test_the_graph_is_read(graph):
    # The checks below are only as good as the graph: it must hold known edges.
    assert "stream_app.runtime.runtime" in graph["stream_app.adapters.faust_app"]
    assert "stream_app.state.partition" in graph["stream_app.runtime.runtime"]
    assert "schemas.records" in graph["collectors.decode"]


def test_no_import_cycle(graph):
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("pkg", ["collectors", "schemas"])
def test_collectors_and_schemas_never_import_the_stream_app(graph, pkg):
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items() if m.split(".")[0] == pkg
                 for d in deps if d.split(".")[0] == "stream_app")
    assert not bad, bad


def test_the_core_imports_no_adapter(graph):
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items() if m.startswith("stream_app.core")
                 for d in deps if d.startswith("stream_app.")
                 and not d.startswith("stream_app.core") and d != "stream_app._fasthttp")
    assert not bad, bad


def test_state_and_runtime_do_not_import_adapters_or_cli(graph):
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items()
                 if m.startswith(("stream_app.state", "stream_app.runtime"))
                 for d in deps if d.startswith(("stream_app.adapters", "stream_app.cli")))
    bad += sorted(f"{m} -> {d}" for m, deps in graph.items() if m.startswith("stream_app.state")
                  for d in deps if d.startswith("stream_app.runtime"))
    assert not bad, bad


def test_no_private_attribute_of_faust_aiokafka_or_mode():
    """No ``x._name`` on an object of those libraries (the Faust app used to reach into
    ``app.producer._ensure_producer()`` and the consumer's fetcher), and no import of a
    private module or name from them."""
    hits = []
    for name, path in _sources().items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[0] in ("faust", "aiokafka", "mode"):
                if any(p.startswith("_") for p in node.module.split(".")) or \
                        any(a.name.startswith("_") for a in node.names):
                    hits.append(f"{name}:{node.lineno} from {node.module} import ...")
        text = path.read_text()
        if any(f"import {lib}" in text or f"from {lib}" in text
               for lib in ("faust", "aiokafka", "mode")):
            # In a module using those libraries, a private attribute of anything but our own
            # object (self, cls) is theirs.
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                        and not node.attr.startswith("__") and not (
                            isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    hits.append(f"{name}:{node.lineno} .{node.attr}")
    assert not hits, hits


def test_analyze_startup_stays_light(tmp_path):
    """`mirrorscope analyze` imports neither faust, aiokafka, redis nor boto3."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from stream_app.cli import main\n"
        f"r = CliRunner().invoke(main, ['analyze', {str(SAMPLE)!r}, '--no-progress', "
        f"'--out', {str(tmp_path / 'out')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = sorted(m for m in ('faust', 'aiokafka', 'redis', 'boto3', 'kafka', 'mode')"
        " if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"analyze loaded {r.stdout.strip()}"


def test_command_modules_are_not_shadowed_by_their_commands():
    """`from stream_app.cli import sink` is the module (its command is bound as another name
    in stream_app.cli), so tests and tools can reach the module's functions."""
    import inspect

    import stream_app.cli as cli
    for name in ("sink", "worker", "kinesis", "options", "devservices"):
        __import__(f"stream_app.cli.{name}")
        assert inspect.ismodule(getattr(cli, name)), name
