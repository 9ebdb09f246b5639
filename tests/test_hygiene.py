"""Secure-by-default hygiene (issue 13): output files not readable by other users, no password
on a command line, a sink data dir a non-root user can use, TLS to Redis verified by default
(a real redis-server speaking TLS with a certificate made here by openssl)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.services.kafka_service import free_port
from tests.services.redis_service import LocalRedis
from stream_app.state.store import RedisConfig, connect
from tests.conftest import SAMPLE

EXE = str(Path(sys.executable).with_name("mirrorscope"))


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRRORSCOPE_")}
    env.update(extra)
    return env


def test_outputs_are_not_world_readable(tmp_path):
    out = tmp_path / "out"
    # even from a shell whose umask lets everyone read
    res = subprocess.run(["sh", "-c", 'umask 000; exec "$0" "$@"', EXE, "analyze", str(SAMPLE),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    paths = [out, *out.rglob("*")]
    assert {p.name for p in paths} >= {"flows.jsonl", "http.jsonl", "alerts.jsonl", "dns.jsonl",
                                       "tls.jsonl", "ssh.jsonl", "summary.json"}
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o007 == 0, f"{p} is {oct(mode)}"


@pytest.mark.parametrize("args", [
    ["--redis-url", "redis://:hunter2-secret@127.0.0.1:1/0"],
    ["--redis-password", "hunter2-secret"],
    ["--kafka-sasl-password", "hunter2-secret"],
])
def test_no_password_on_the_command_line(args, tmp_path):
    res = subprocess.run([EXE, "worker", *args, "--datadir", str(tmp_path)], capture_output=True,
                         text=True, timeout=60,
                         env=clean_env(MIRRORSCOPE_STATE_KEY="k" * 32))
    assert res.returncode == 2, res.stderr
    assert "visible to every user" in res.stderr and "MIRRORSCOPE_" in res.stderr


def test_password_from_the_environment_is_taken(tmp_path):
    """The same password in the environment passes the check (and the worker then fails on
    the closed port, not on the option)."""
    res = subprocess.run([EXE, "worker", "--datadir", str(tmp_path), "--bootstrap",
                          f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                         timeout=120, env=clean_env(
                             MIRRORSCOPE_STATE_KEY="k" * 32,
                             MIRRORSCOPE_REDIS_URL=f"redis://:pw@127.0.0.1:{free_port()}/0"))
    assert "visible to every user" not in res.stderr
    assert res.returncode != 0


def test_local_redis_password_not_in_its_command_line(tmp_path):
    r = LocalRedis(tmp_path / "redis", password="s3cret-in-a-file")
    r.start()
    try:
        cmdline = Path(f"/proc/{r.proc.pid}/cmdline").read_bytes()
        assert b"s3cret-in-a-file" not in cmdline
        conf = next((tmp_path / "redis").glob("*.conf"))
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert redis.Redis.from_url(r.url).ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=r.port).ping()
    finally:
        r.stop()


def test_sink_data_dir_for_a_non_root_user(tmp_path, monkeypatch):
    import stream_app.datadir as dd
    from stream_app.sinks.s3 import S3Settings
    monkeypatch.setattr(dd, "SYSTEM_DATA_DIR", tmp_path / "var-lib-missing")
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert dd.default_data_dir(env) == tmp_path / "state" / "mirrorscope"
    assert S3Settings.from_env(env, bucket="b").data_dir == tmp_path / "state" / "mirrorscope"
    assert dd.default_data_dir({**env, "MIRRORSCOPE_DATA_DIR": "/x"}) == Path("/x")
    (tmp_path / "var-lib").mkdir()
    monkeypatch.setattr(dd, "SYSTEM_DATA_DIR", tmp_path / "var-lib")
    assert dd.default_data_dir(env) == tmp_path / "var-lib"  # where the service owns it


# -- TLS to Redis -----------------------------------------------------------------------------

def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """redis-server on a TLS-only loopback port, its certificate (for IP 127.0.0.1) signed by
    a CA made here."""
    exe = shutil.which("redis-server")
    assert exe, "redis-server missing (apt-get install redis-server)"
    d = tmp_path_factory.mktemp("tls-redis")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=mirrorscope-test-ca", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=redis-test", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=d)
    port = free_port()
    proc = subprocess.Popen([exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(d / "server.crt"), "--tls-key-file",
                             str(d / "server.key"), "--tls-ca-cert-file", str(d / "ca.crt"),
                             "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
                             "--dir", str(d)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ok = False
        for _ in range(100):
            try:
                ok = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(d / "ca.crt"),
                                 socket_timeout=1).ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        assert ok, "redis-server with TLS did not come up (built without TLS?)"
        yield port, d / "ca.crt"
    finally:
        proc.terminate()
        proc.wait(10)


def test_rediss_verifies_the_certificate_by_default(tls_redis):
    port, ca = tls_redis
    unknown = connect(RedisConfig(url=f"rediss://127.0.0.1:{port}/0", retries=0))
    with pytest.raises(redis.exceptions.ConnectionError, match="(?i)certificate"):
        unknown.ping()
    trusted = connect(RedisConfig(url=f"rediss://127.0.0.1:{port}/0", ssl_ca_certs=str(ca),
                                  retries=0))
    assert trusted.ping()
    # the name is checked too: the certificate is for 127.0.0.1, not localhost
    wrong_name = connect(RedisConfig(url=f"rediss://localhost:{port}/0", ssl_ca_certs=str(ca),
                                     retries=0))
    with pytest.raises(redis.exceptions.ConnectionError, match="(?i)certificate|hostname"):
        wrong_name.ping()


def test_log_lines_are_redacted(capsys):
    """Whatever logs it (our code, a library), a URL's credentials and password= pairs are
    redacted in the line; the rest of the line stays."""
    import logging

    from collectors.logs import JsonFormatter
    from stream_app.logredact import install
    install()
    lg = logging.getLogger("mirrorscope.test.redact")
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JsonFormatter())
    lg.addHandler(h)
    lg.setLevel(logging.INFO)
    try:
        lg.info("GET %s failed", "http://bob:PWLEAK1@h.example/x?token=TOKLEAK2&page=3",
                extra={"url": "rediss://:PWLEAK3@redis:6379/0", "n": 5})
        lg.warning("login with password=PWLEAK4 user=alice")
    finally:
        lg.removeHandler(h)
    err = capsys.readouterr().err
    assert "page=3" in err and "user=alice" in err and '"n": 5' in err.replace('"n":5', '"n": 5')
    for leak in ("PWLEAK1", "TOKLEAK2", "PWLEAK3", "PWLEAK4"):
        assert leak not in err, err
