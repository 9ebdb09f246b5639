"""The command line as a user meets it: the real console script, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPUS, SAMPLE

EXE = Path(sys.executable).with_name("mirrorscope")


def mirrorscope(*args: str) -> subprocess.CompletedProcess:
    assert EXE.exists(), f"{EXE} missing: install the project (bash .ci/setup.sh)"
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=300)


def test_help_everywhere():
    top = mirrorscope("--help")
    assert top.returncode == 0 and "analyze" in top.stdout
    sub = mirrorscope("analyze", "--help")
    assert sub.returncode == 0 and "--out" in sub.stdout and "--idle-timeout" in sub.stdout


def test_analyze_bundled_sample(tmp_path):
    out = tmp_path / "out"
    res = mirrorscope("analyze", str(SAMPLE), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "frames read" in res.stdout and "Top talkers" in res.stdout
    flows = [json.loads(line) for line in (out / "flows.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert flows and summary["flows"] == len(flows)
    assert summary["frames"] == summary["decoded"] + summary["dropped"]
    # The sample is HTTP mirrored through the lab on VNI 1234 (docs/samples/README.md).
    http = [f for f in flows if f["dstport"] == 80]
    assert http and all(f["vni"] == 1234 for f in http)
    assert any(f["conn_state"] == "SF" for f in http)


def test_json_summary_on_stdout(tmp_path):
    res = mirrorscope("analyze", str(CORPUS / "zeek__vxlan.pcap"), "--out", str(tmp_path), "--json")
    assert res.returncode == 0
    s = json.loads(res.stdout)
    assert s["frames"] == 10 and s["drops"] == {"non_ip": 2}


@pytest.mark.parametrize("case", ["missing", "unknown_format", "directory"])
def test_clear_errors_for_bad_input(tmp_path, case):
    if case == "missing":
        path, want = tmp_path / "nope.pcap", "no such file"
    elif case == "unknown_format":
        path, want = tmp_path / "notes.txt", "unknown format"
        path.write_text("hello, not a capture\n")
    else:
        path, want = tmp_path, "is a directory"
    res = mirrorscope("analyze", str(path), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert want in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o" / "flows.jsonl").exists()


def test_clear_error_for_unwritable_output(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    res = mirrorscope("analyze", str(SAMPLE), "--out", str(a_file / "sub"))
    assert res.returncode == 2 and "is not a folder" in res.stderr
    res = mirrorscope("analyze", str(SAMPLE), "--out", "/proc/mirrorscope-test")
    assert res.returncode == 2 and "cannot write" in res.stderr and "Traceback" not in res.stderr


def test_bad_option_values():
    res = mirrorscope("analyze", str(SAMPLE), "--out", "/tmp/x", "--idle-timeout", "0")
    assert res.returncode == 2 and "must be positive" in res.stderr


def test_progress_bar_when_asked(tmp_path):
    res = mirrorscope("analyze", str(SAMPLE), "--out", str(tmp_path), "--progress")
    assert res.returncode == 0  # rich renders it to stderr; a non-tty shows the final state
