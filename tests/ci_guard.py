"""CI never shrinks silently: with CI set (as CI sets it: CI=true), a skipped test is a failed
test, its skip reason in the failure. A missing tool, service or module must be installed by
.ci/setup.sh, not quietly leave its tests out of the count (issue #12).

A pytest plugin: tests/conftest.py loads it for every run of the suite (`pytest_plugins`).
CI=false, CI=0 or an empty CI leave skips as they are, for a developer's partial machine.
"""

from __future__ import annotations

import os

import pytest


def ci_active() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or hasattr(rep, "wasxfail") or not ci_active():
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    rep.outcome = "failed"
    rep.longrepr = (f"skipped with CI={os.environ['CI']!r}, where a skip is a failure "
                    f"(install what it needs in .ci/setup.sh): {reason}")
