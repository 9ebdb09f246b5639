"""The state key is fail-closed: no key, no worker; a key longer than the MAC takes is refused.

The commands run as the real console script; the Redis URL points at a closed port, so a worker
that got past the key check would fail differently (a connection error, not our message)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.state.codec import Codec
from tests.services.kafka_service import free_port
from stream_app.statekey import DEV_KEY, MAX_KEY_BYTES, StateKeyError, load_state_key

EXE = str(Path(sys.executable).with_name("mirrorscope"))


def run(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MIRRORSCOPE_")}
    e.update(env or {})
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, env=e)


def test_no_key_is_refused():
    with pytest.raises(StateKeyError, match="no state key"):
        load_state_key(None, environ={})


def test_dev_key_only_when_asked(caplog):
    with caplog.at_level(logging.WARNING, "mirrorscope.statekey"):
        assert load_state_key(None, insecure_dev_key=True, environ={}) == DEV_KEY
    assert "INSECURE" in caplog.text
    # A configured key wins over the flag: the flag never weakens a real setup.
    assert load_state_key(None, insecure_dev_key=True,
                          environ={"MIRRORSCOPE_STATE_KEY": "k" * 32}) == b"k" * 32


def test_key_from_file_and_env(tmp_path):
    f = tmp_path / "key"
    f.write_bytes(b"f" * 40 + b"\n")  # a Secret mounted as a file often ends with a newline
    f.chmod(0o600)
    assert load_state_key(str(f), environ={"MIRRORSCOPE_STATE_KEY": "e" * 32}) == b"f" * 40
    assert load_state_key(None, environ={"MIRRORSCOPE_STATE_KEY_FILE": str(f)}) == b"f" * 40
    assert load_state_key(None, environ={"MIRRORSCOPE_STATE_KEY": "e" * 32}) == b"e" * 32
    with pytest.raises(StateKeyError, match="state key file"):
        load_state_key(str(tmp_path / "missing"), environ={})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(StateKeyError, match="empty"):
        load_state_key(str(tmp_path / "empty"), environ={})


def test_long_key_refused_not_truncated():
    exact = b"x" * MAX_KEY_BYTES
    assert load_state_key(None, environ={"MIRRORSCOPE_STATE_KEY": exact.decode()}) == exact
    # Two keys sharing their first 64 bytes would sign alike if cut: refused instead.
    with pytest.raises(StateKeyError, match="at most 64"):
        load_state_key(None, environ={"MIRRORSCOPE_STATE_KEY": "x" * (MAX_KEY_BYTES + 1)})
    # Why it matters: the codec keys BLAKE2b with key[:64], so without the check these two
    # different keys would produce the same tags.
    a, b = Codec(exact + b"A"), Codec(exact + b"B")
    assert a._tag(b"blob") == b._tag(b"blob")


@pytest.mark.parametrize("command", ["worker", "kinesis-worker"])
def test_worker_refuses_to_start_without_a_key(command, tmp_path):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    extra = (["--stream", "s", "--region", "us-east-1", "--out", str(tmp_path / "o")]
             if command == "kinesis-worker" else ["--datadir", str(tmp_path / "d")])
    res = run(command, "--redis-url", dead_redis, *extra)
    assert res.returncode != 0
    assert "no state key" in res.stderr and "--insecure-dev-key" in res.stderr, res.stderr
    assert "onnection" not in res.stderr  # refused before connecting to anything
    res = run(command, "--redis-url", dead_redis, *extra,
              env={"MIRRORSCOPE_STATE_KEY": "y" * 65})
    assert res.returncode != 0 and "at most 64" in res.stderr, res.stderr
