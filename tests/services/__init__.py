"""Launchers and pytest fixtures for the real services the tests use (Kafka, Redis, moto).

Import them as ``tests.services...`` only. Under a second name (``services...``, reachable when
tests/ itself is on sys.path) they would be a second module with its own session-scoped
fixtures, and a run would start a second broker; refuse that loudly instead. The one other
name is the `mirrorscope services` command's (stream_app/cli/devservices.py), which loads the
launchers alone, in a process with no test fixtures."""

if __name__ not in ("tests.services", "mirrorscope_dev_services"):
    raise ImportError(
        f"the test services were imported as {__name__!r}: import them as 'tests.services' "
        "(a second module name means a second set of session fixtures and a second Kafka broker)")
