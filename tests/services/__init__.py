"""Launchers and pytest fixtures for the real services the tests use (Kafka, Redis, moto).

Import them as ``tests.services...`` only. Under a second name (``services...``, reachable when
tests/ itself is on sys.path) they would be a second module with its own session-scoped
fixtures, and a run would start a second broker; refuse that loudly instead."""

if __name__ != "tests.services":
    raise ImportError(
        f"the test services were imported as {__name__!r}: import them as 'tests.services' "
        "(a second module name means a second set of session fixtures and a second Kafka broker)")
