"""`mirrorscope --help` and `analyze` import nothing they do not use (issue #12), the lazily
registered commands are the real ones, --version tells whether the C fast paths run, and a
missing extra is named instead of a traceback. (Timings live in bench/bench_startup.py.)"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

from click.testing import CliRunner

from stream_app import about
from stream_app.cli import COMMANDS, main
from tests.conftest import SAMPLE

# What only the distributed mode, the AWS sinks or the other commands need.
HEAVY = ("faust", "aiokafka", "kafka", "redis", "boto3", "botocore", "pyarrow", "asyncio",
         "prometheus_client", "lz4", "yaml", "collectors.collect_cli", "stream_app.cli.worker",
         "stream_app.cli.sink", "stream_app.cli.kinesis", "stream_app.adapters.faust_app")


def modules_after(*argv: str) -> set[str]:
    """The modules a fresh interpreter holds after running `mirrorscope ARGV`."""
    code = ("import json, sys\nfrom stream_app.cli import main\n"
            "try:\n    main(sys.argv[1:], prog_name='mirrorscope')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('\\n' + json.dumps(sorted(sys.modules)))\n")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.splitlines()[-1]))


def heavy_in(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_help_imports_no_command_nor_rich():
    mods = modules_after("--help")
    assert heavy_in(mods) == []
    assert not any(m == "rich" or m.startswith("rich.") for m in mods)
    assert "collectors.decode" not in mods and "stream_app.adapters.embedded" not in mods


def test_analyze_imports_only_what_analyze_runs(tmp_path):
    mods = modules_after("analyze", str(SAMPLE), "--out", str(tmp_path / "out"), "--no-progress")
    assert (tmp_path / "out" / "flows.jsonl").stat().st_size > 0
    assert heavy_in(mods) == []
    assert "stream_app.adapters.embedded" in mods and "stream_app.core.detectors" in mods


def test_the_command_table_names_the_real_commands():
    for name, (target, short_help) in COMMANDS.items():
        module, _, attr = target.partition(":")
        cmd = getattr(importlib.import_module(module), attr)
        assert cmd.name == name
        real = " ".join((cmd.short_help or cmd.help or "").split())
        assert real.startswith(short_help.removesuffix("...")), (name, short_help, real[:120])
    listed = CliRunner().invoke(main, ["--help"]).output
    for name in COMMANDS:
        assert f"\n  {name} " in listed
        sub = CliRunner().invoke(main, [name, "--help"])
        assert sub.exit_code == 0 and f"Usage: main {name}" in sub.output, sub.output


def test_version_names_the_version_and_whether_the_c_fast_paths_run():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0
    assert r.output.startswith(f"mirrorscope {about.version()}\n")
    # .ci/setup.sh builds both extensions for the tests, so here they must be active.
    assert ("C fast paths: active (collectors._fastdecode, stream_app._fasthttp, "
            "stream_app._fastconn)") in r.output
    assert "[stream] installed" in r.output and "[aws] installed" in r.output


def test_version_says_when_the_c_fast_paths_are_not_built(monkeypatch):
    import stream_app._fasthttp as fasthttp
    monkeypatch.setitem(sys.modules, "stream_app._fasthttp", None)  # as if it failed to build
    assert "C fast paths: partly active (decoder C, HTTP pure Python)" in about.report()
    monkeypatch.setitem(sys.modules, "stream_app._fasthttp", fasthttp)
    monkeypatch.setitem(sys.modules, "stream_app._fastconn", None)  # the connection alone
    assert "C fast paths: partly active (decoder C, HTTP pure Python)" in about.report()
    monkeypatch.setitem(sys.modules, "collectors._fastdecode", None)
    assert "C fast paths: inactive" in about.report()


def test_an_option_needing_a_missing_extra_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` now fails as if not installed
    r = CliRunner().invoke(main, ["analyze", str(SAMPLE), "--out", str(tmp_path / "o"),
                                  "--s3-bucket", "b"])
    assert r.exit_code == 1, r.output
    assert "analyze needs the [aws] extra (boto3 is not installed): pip install 'mirrorscope[aws]'" \
        in r.output
