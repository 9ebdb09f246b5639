"""--log-format text|json on every command (and MIRRORSCOPE_LOG_FORMAT), and no INFO chatter
from client libraries by default."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

from collectors import logs
from tests.conftest import SAMPLE

TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warning|error|critical) [\w.]+: ")


def collect(tmp_path, *pre: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_app.cli", *pre, "collect", "--pcap",
                           str(SAMPLE), "--embedded", "--out", str(tmp_path / "o"),
                           "--health-port", "0", "--metrics-port", "0", "--no-detect"],
                          capture_output=True, text=True, timeout=120, env=env)


def log_lines(stderr: str) -> list[str]:
    # The analyze-style summary follows the logs on stderr; log lines start with a time or {.
    return [x for x in stderr.splitlines() if x.startswith("{") or TEXT.match(x)]


def test_text_and_json(tmp_path):
    p = collect(tmp_path, "--log-format", "text")
    assert p.returncode == 0, p.stderr
    lines = log_lines(p.stderr)
    assert lines and all(TEXT.match(x) for x in lines), lines
    assert any("mirrorscope.collect: configuration" in x for x in lines)

    import os
    p = collect(tmp_path, env={**os.environ, "MIRRORSCOPE_LOG_FORMAT": "json"})
    assert p.returncode == 0, p.stderr
    lines = log_lines(p.stderr)
    assert lines and not any(TEXT.match(x) for x in lines)
    assert {json.loads(x)["logger"] for x in lines} >= {"mirrorscope.collect"}


def test_no_third_party_info_by_default(capfd, monkeypatch):
    monkeypatch.setenv(logs.FORMAT_ENV, "text")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level,
             {n: logging.getLogger(n).level for n in ("kafka", *logs.THIRD_PARTY)})
    try:
        logs.setup("info")
        logging.getLogger("aiokafka.consumer.group_coordinator").info("joined group")
        logging.getLogger("botocore.credentials").info("Found credentials")
        logging.getLogger("kafka.conn").error("connect attempt failed")  # retried, not news
        logging.getLogger("aiokafka.conn").warning("broker gone")
        logging.getLogger("mirrorscope.test").info("ours")
        err = capfd.readouterr().err
        assert "joined group" not in err and "Found credentials" not in err
        assert "connect attempt failed" not in err
        assert "broker gone" in err and "mirrorscope.test: ours" in err
        logs.setup("debug")
        logging.getLogger("botocore.credentials").debug("Found credentials")
        assert "Found credentials" in capfd.readouterr().err
    finally:  # pytest's own handlers back
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        for n, lvl in saved[2].items():
            logging.getLogger(n).setLevel(lvl)
