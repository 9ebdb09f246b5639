"""tests/waiting.py: the shared deadline loop returns as soon as its condition holds and fails
saying what it waited for; tests/ci_guard.py: with CI set, a skip fails the run."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.waiting import wait_until, wait_until_async

ROOT = Path(__file__).resolve().parents[1]


def test_wait_until_returns_the_first_truthy_value_without_waiting_out_the_timeout():
    calls = itertools.count(1)
    t = time.monotonic()
    assert wait_until(lambda: next(calls) >= 3 and "ready", timeout=30, interval=0.01) == "ready"
    assert time.monotonic() - t < 5


def test_wait_until_fails_with_what_it_waited_for_the_last_value_and_the_details():
    with pytest.raises(AssertionError) as e:
        wait_until(lambda: [], timeout=0.05, interval=0.01, what="the worker's results",
                   details=lambda: "--- worker log tail")
    msg = str(e.value)
    assert "the worker's results" in msg and "last: []" in msg and "--- worker log tail" in msg


def test_wait_until_without_fail_returns_the_last_value_and_a_check_may_stop_it_early():
    assert wait_until(lambda: 0, timeout=0.05, interval=0.01, fail=False) == 0

    def died():
        raise RuntimeError("exited with 1")
    with pytest.raises(RuntimeError, match="exited with 1"):
        wait_until(died, timeout=30)


def test_wait_until_checks_once_more_after_the_deadline():
    # The condition comes true during the last sleep: the loop must not report a timeout.
    start = time.monotonic()
    assert wait_until(lambda: time.monotonic() - start > 0.2, timeout=0.1, interval=0.3)


def test_wait_until_async_lets_the_awaited_task_run():
    async def main():
        done = []

        async def work():
            await asyncio.sleep(0.05)
            done.append(1)
        task = asyncio.create_task(work())
        assert await wait_until_async(lambda: done, timeout=10, interval=0.01) == [1]
        await task
    asyncio.run(main())


def _inner_run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""
        import pytest

        def test_runs():
            pass

        def test_needs_a_tool():
            pytest.skip("tool X is not installed")
    """))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "tests.ci_guard", "--rootdir", str(tmp_path), str(tmp_path)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_with_ci_set_a_skipped_test_fails_the_run_and_says_why(tmp_path):
    r = _inner_run(tmp_path, "true")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed, 1 passed" in r.stdout
    assert "tool X is not installed" in r.stdout and "skip is a failure" in r.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_without_ci_a_skip_stays_a_skip(tmp_path, ci):
    r = _inner_run(tmp_path, ci)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 1 skipped" in r.stdout


def test_the_test_services_have_one_module_name_only(tmp_path):
    # tests/ on sys.path made `services.fixtures` a second copy of `tests.services.fixtures`
    # (a second Kafka broker per run); the package now refuses the second name.
    code = ("import sys; sys.path.insert(0, sys.argv[1]);\n"
            "import tests.services.fixtures\n"
            "try:\n    import services.fixtures\nexcept ImportError as e:\n    print('refused:', e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "tests")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "refused: the test services were imported as 'services'" in r.stdout
