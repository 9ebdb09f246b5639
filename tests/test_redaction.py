"""Redaction (stream_app/core/redact.py): each kind of secret issue 13 lists, put into real
requests of a capture, is found in no output of `mirrorscope analyze` (files, stdout, stderr),
while the records still show the request was there (the parameter name, [redacted]).
The distributed path (Kafka, Redis, S3) is tests/test_redaction_distributed.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.core.redact import REDACTED, RedactConfig, uri_digest
from tests.secret_traffic import (
    CUSTOM_PARAM, MARKERS, SECRETS, leaks, write_detect_config, write_secret_capture)

EXE = str(Path(sys.executable).with_name("mirrorscope"))


@pytest.mark.parametrize("uri,want", [
    ("/a?x=1&token=t&q=2", f"/a?x=1&token={REDACTED}&q=2"),
    ("/a?Password=p", f"/a?Password={REDACTED}"),
    ("/a?api%5Fkey=k", f"/a?api%5Fkey={REDACTED}"),
    ("/o?X-Amz-Credential=c&X-Amz-Signature=s&X-Amz-Date=d",
     f"/o?X-Amz-Credential={REDACTED}&X-Amz-Signature={REDACTED}&X-Amz-Date=d"),
    ("/v1/token/abc/me", f"/v1/token/{REDACTED}/me"),
    ("/v1/api_key/abc", f"/v1/api_key/{REDACTED}"),
    ("/x;jsessionid=s?y=1", f"/x;jsessionid={REDACTED}?y=1"),
    ("https://u:p@h/x", f"https://{REDACTED}@h/x"),
    ("https://h/cb#access_token=t&s=1", f"https://h/cb#access_token={REDACTED}&s=1"),
    ("/bot123456:AAbbccddeeffgghhiijjkkll/send", f"/bot123456:{REDACTED}/send"),
    # names that merely look alike stay, and so do values that are words
    ("/a?author=bob&keyword=k&monkey=1&q=password", None),
    ("/static/key.png", None),
    ("/index.html", None),
])
def test_uri_rules(uri, want):
    assert RedactConfig().redactor.uri(uri) == (want or uri)


def test_extendable_never_narrowed():
    r = RedactConfig(params=("Tenant",), path_segments=("vault",)).redactor
    assert r.uri("/vault/s3cr3t/x?tenant=t&token=u") == \
        f"/vault/{REDACTED}/x?tenant={REDACTED}&token={REDACTED}"
    assert RedactConfig().redactor.uri("/vault/s3cr3t?tenant=t") == "/vault/s3cr3t?tenant=t"


def test_free_text_and_digest():
    r = RedactConfig().redactor
    line = "fetch http://u:pw@h/x?token=abc failed; retry with password=hunter2 user=bob"
    out = r.text(line)
    assert "pw" not in out.split("@")[0] and "abc" not in out and "hunter2" not in out
    assert "user=bob" in out
    assert uri_digest("/a?token=x") != uri_digest("/a?token=y")
    assert "token" not in uri_digest("/a?token=x")


def run_analyze(pcap, out, *extra):
    return subprocess.run([EXE, "analyze", str(pcap), "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300)


def test_no_secret_in_any_output_of_analyze(tmp_path):
    pcap = tmp_path / "secrets.pcap"
    n = write_secret_capture(pcap)
    cfg = write_detect_config(tmp_path / "detect.json")
    out = tmp_path / "out"
    res = run_analyze(pcap, out, "--redact-param", CUSTOM_PARAM, "--detect-config", str(cfg),
                      "--json")
    assert res.returncode == 0, res.stderr
    http = [json.loads(x) for x in (out / "http.jsonl").read_text().splitlines()]
    kinds = {h["uri"].partition("kind=")[2].split("&")[0] for h in http}
    assert len(http) == n and kinds == set(SECRETS)  # every request analysed...
    alerts = [json.loads(x) for x in (out / "alerts.jsonl").read_text().splitlines()]
    assert [a["type"] for a in alerts] == ["http_attack"]  # ...and seen by the detectors
    for h in http:  # ...and each shows that a credential was there
        assert REDACTED in json.dumps(h), h
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"flows.jsonl", "http.jsonl", "alerts.jsonl"}
    found = {p.name: leaks(p.read_bytes()) for p in files}
    found["stdout"], found["stderr"] = leaks(res.stdout), leaks(res.stderr)
    assert not any(found.values()), found


def test_the_check_sees_secrets_when_they_are_kept(tmp_path):
    """The same search finds every marker when redaction is turned off, so the test above
    would notice a leak."""
    pcap = tmp_path / "secrets.pcap"
    write_secret_capture(pcap)
    res = run_analyze(pcap, tmp_path / "out", "--keep-credentials")
    assert res.returncode == 0, res.stderr
    assert set(leaks((tmp_path / "out" / "http.jsonl").read_bytes())) == set(MARKERS)
    # without --redact-param the custom name is not a default: kept, as documented
    res = run_analyze(pcap, tmp_path / "out2")
    assert leaks((tmp_path / "out2" / "http.jsonl").read_bytes()) == ["MSKCUSTOM6c5b"]
