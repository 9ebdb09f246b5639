"""The test suite is a package, so every test module and helper has exactly one module name
(`tests.x`): pytest imports tests/conftest.py as `tests.conftest` and puts the repository root
on sys.path, never tests/ itself. Before this, tests/ was on sys.path too, so
`services.fixtures` and `tests.services.fixtures` were two modules with two sets of
session-scoped fixtures, and a run started two Kafka brokers (issue #12)."""
