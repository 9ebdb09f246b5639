"""The one deadline loop of the tests: poll a condition until it holds or time runs out.

Tests wait on real processes and services (a worker becoming ready, a topic filling, a
checkpoint landing), so they poll. Every such wait goes through wait_until, so each one ends
with the same kind of failure: what was awaited, for how long, the last value seen and the
details that explain it (usually a process's log tail), instead of a loop of its own that may
forget to fail or to say why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _timeout_message(what: str, timeout: float, last: Any, details: Any) -> str:
    extra = details() if callable(details) else details
    msg = f"timed out after {timeout:g} s waiting for {what} (last: {last!r})"
    return msg + (f"\n{extra}" if extra else "")


def wait_until(check: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.1,
               what: str = "the condition", details: Any = None, fail: bool = True,
               error: type[Exception] = AssertionError) -> T:
    """Call ``check()`` until it returns a truthy value, and return that value.

    ``check`` runs at least once, and once more after the deadline, so a slow machine never
    loses a result that arrived during the last sleep. It may raise to stop early (a process
    that died). On timeout: raise ``error`` naming ``what``, the last value and ``details``
    (a string, or a callable such as a log tail, called only then); with ``fail=False``
    return the last (falsy) value instead, for a caller that asserts on it itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    value = check()
    if value or not fail:
        return value
    raise error(_timeout_message(what, timeout, value, details))


async def wait_until_async(check: Callable[[], T | Awaitable[T]], timeout: float = 10.0, *,
                           interval: float = 0.1, what: str = "the condition", details: Any = None,
                           fail: bool = True, error: type[Exception] = AssertionError) -> T:
    """wait_until for a test running in an event loop: sleeps with asyncio.sleep, so the tasks
    it waits on keep running; ``check`` may be a coroutine function."""
    async def call():
        v = check()
        return await v if asyncio.iscoroutine(v) else v

    deadline = time.monotonic() + timeout
    while True:
        value = await call()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(interval)
    value = await call()
    if value or not fail:
        return value
    raise error(_timeout_message(what, timeout, value, details))
