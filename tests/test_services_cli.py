"""`mirrorscope services up|down|status` as a user runs it (the installed command, in a
subprocess): real Kafka, Redis and moto, reached with their own clients."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from schemas.kinds import KINDS
from tests.services.kafka_service import jars_present, port_open
from tests.services.redis_service import redis_server_exe
from tests.waiting import wait_until

MIRRORSCOPE = str(Path(sys.executable).parent / "mirrorscope")
TOPICS = {"mirrorscope.packets", *(k.topic for k in KINDS)}

needs_all = pytest.mark.skipif(
    shutil.which("java") is None or not jars_present() or redis_server_exe() is None,
    reason="needs java, the Kafka jars and redis-server (bash .ci/setup.sh)")


def cli(*args: str, check: bool = True, env: dict | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "MIRRORSCOPE_SERVICES_DIR"}
    e.update(env or {})
    p = subprocess.run([MIRRORSCOPE, "services", *args], capture_output=True, text=True,
                       timeout=timeout, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"mirrorscope services {' '.join(args)} -> {p.returncode}\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def gone(pid: int) -> bool:
    """No such process, or only its zombie (stopped; its new parent has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in "ZX"


def redis_ping(url: str) -> bool:
    c = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1)
    try:
        return c.ping()
    finally:
        c.close()


def kafka_topics(bootstrap: str) -> dict[str, int]:
    from kafka import KafkaAdminClient
    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        names = [t for t in a.list_topics() if not t.startswith("__")]
        return {md["name"]: len(md["partitions"]) for md in a.describe_topics(names)}
    finally:
        a.close()


def s3(url: str):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def sdir(tmp_path):
    """The services folder; whatever a test left running is stopped (and purged) at the end."""
    d = tmp_path / "services"
    yield d
    cli("down", "--dir", str(d), "--purge", "--timeout", "10", check=False)


@needs_all
def test_up_status_down(sdir):
    t0 = time.monotonic()
    st = json.loads(cli("up", "--dir", str(sdir), "--json").stdout)
    took_up = time.monotonic() - t0
    sv = st["services"]
    assert set(sv) == {"kafka", "redis", "moto"} and sorted(st["started"]) == sorted(sv)
    assert st["already_running"] == []
    assert json.loads((sdir / "services.json").read_text())["services"] == sv
    pids = {n: e["pid"] for n, e in sv.items()}

    # each answers its own client
    topics = kafka_topics(sv["kafka"]["bootstrap"])
    assert set(topics) == TOPICS and topics["mirrorscope.packets"] == 4
    assert st["topics"] == topics
    assert redis_ping(sv["redis"]["url"])
    c = s3(sv["moto"]["url"])
    assert c.list_buckets()["Buckets"] == []
    c.create_bucket(Bucket="mirrorscope-try")
    assert [b["Name"] for b in c.list_buckets()["Buckets"]] == ["mirrorscope-try"]

    env = st["env"]
    assert env["MIRRORSCOPE_KAFKA_BOOTSTRAP"] == sv["kafka"]["bootstrap"]
    assert env["MIRRORSCOPE_REDIS_URL"] == sv["redis"]["url"]
    assert env["AWS_ENDPOINT_URL"] == sv["moto"]["url"]
    assert env["AWS_ACCESS_KEY_ID"] == "testing" and env["MIRRORSCOPE_PARTITIONS"] == "4"

    # the human output has the addresses and export lines a shell takes as they are
    s = cli("status", "--dir", str(sdir))
    for n in ("kafka", "redis", "moto"):
        assert f"{n} " in s.stdout and "[up]" in s.stdout
    exports = cli("status", "--dir", str(sdir), "--env").stdout
    shell = subprocess.run(["bash", "-c", exports + "\nenv"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for k, v in env.items():
        assert f"{k}={v}" in shell
    status = json.loads(cli("status", "--dir", str(sdir), "--json").stdout)
    assert status["running"] is True and set(status["status"].values()) == {"up"}

    # a second `up` starts nothing and reports the same services
    again = cli("up", "--dir", str(sdir))
    assert "already running" in again.stdout and sv["kafka"]["bootstrap"] in again.stdout
    assert "export MIRRORSCOPE_REDIS_URL=" in again.stdout
    again = json.loads(cli("up", "--dir", str(sdir), "--json").stdout)
    assert again["started"] == [] and sorted(again["already_running"]) == sorted(sv)
    assert {n: e["pid"] for n, e in again["services"].items()} == pids

    # a service that died: status says so (exit 1), `up` starts only it, on the same port
    os.kill(pids["redis"], signal.SIGKILL)
    wait_until(lambda: not port_open(sv["redis"]["port"]), 5, interval=0.05, fail=False)
    s = cli("status", "--dir", str(sdir), "--json", check=False)
    assert s.returncode == 1 and json.loads(s.stdout)["status"]["redis"] == "down"
    again = json.loads(cli("up", "--dir", str(sdir), "--json").stdout)
    assert again["started"] == ["redis"]
    assert again["services"]["redis"]["url"] == sv["redis"]["url"]
    assert redis_ping(sv["redis"]["url"])
    pids["redis"] = again["services"]["redis"]["pid"]

    t0 = time.monotonic()
    d = cli("down", "--dir", str(sdir))
    took_down = time.monotonic() - t0
    assert "kafka: stopped" in d.stdout
    assert not (sdir / "services.json").exists()
    for n, e in sv.items():
        assert not port_open(e["port"]), n
    for n, pid in pids.items():
        wait_until(lambda: gone(pid), 5, interval=0.05, what=f"{n} (pid {pid}) to exit")
    assert (sdir / "kafka" / "data").is_dir()  # data kept without --purge
    s = cli("status", "--dir", str(sdir))
    assert "no services running" in s.stdout
    assert "nothing to stop" in cli("down", "--dir", str(sdir)).stdout
    print(f"up {took_up:.1f} s, down {took_down:.1f} s")


@needs_all
def test_up_after_down_keeps_ports_and_topics(sdir):
    first = json.loads(cli("up", "--dir", str(sdir), "--no-redis", "--no-moto", "--json",
                           "--partitions", "2").stdout)
    k = first["services"]["kafka"]
    cli("down", "--dir", str(sdir))
    assert not port_open(k["port"])
    again = cli("up", "--dir", str(sdir), "--no-redis", "--no-moto", "--json",
                "--partitions", "3")
    st = json.loads(again.stdout)
    assert set(st["services"]) == {"kafka"}
    assert st["services"]["kafka"]["port"] == k["port"]  # remembered in ports.json
    # the data folder was kept: the topics are still there, with their partitions
    assert kafka_topics(k["bootstrap"])["mirrorscope.packets"] == 2
    assert "already exists with 2 partitions" in again.stderr
    cli("down", "--dir", str(sdir), "--purge")
    assert not (sdir / "kafka").exists() and not (sdir / "ports.json").exists()


def test_missing_prerequisites_start_nothing(tmp_path):
    d = tmp_path / "s"
    p = cli("up", "--dir", str(d), "--no-redis", "--no-moto", check=False,
            env={"MIRRORSCOPE_KAFKA_JARS": str(tmp_path / "no-jars")})
    assert p.returncode == 1
    assert "Kafka jars are missing" in p.stderr and "bash .ci/setup.sh" in p.stderr
    assert not (d / "services.json").exists() and not (d / "kafka").exists()
    p = cli("up", "--dir", str(d), "--no-kafka", "--no-redis", "--no-moto", check=False)
    assert p.returncode == 2 and "nothing to start" in p.stderr


def test_down_leaves_a_reused_pid_alone(tmp_path):
    """services.json names a pid that is now another program: `down` must not signal it."""
    d = tmp_path / "s"
    d.mkdir()
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (d / "services.json").write_text(json.dumps({"version": 1, "services": {
            "moto": {"pid": other.pid, "port": 1, "url": "http://127.0.0.1:1",
                     "log": "x", "match": ["moto_server", "-p 1"]}}}))
        s = cli("status", "--dir", str(d), "--json", check=False)
        assert s.returncode == 1 and json.loads(s.stdout)["status"]["moto"] == "down"
        p = cli("down", "--dir", str(d))
        assert "moto: was not running" in p.stdout
        assert other.poll() is None
        assert not (d / "services.json").exists()
    finally:
        other.kill()
        other.wait()


def test_default_dir_from_environment(tmp_path):
    d = tmp_path / "from-env"
    p = cli("status", env={"MIRRORSCOPE_SERVICES_DIR": str(d)})
    assert str(d) in p.stdout and "no services running" in p.stdout


def test_a_port_left_in_time_wait_by_a_stopped_service_is_free_again():
    """A stopped server that closed its connections first leaves them in TIME_WAIT; `services
    up` must still see its port as free (as the server itself, binding with SO_REUSEADDR,
    would), or a restarted service moves to a new port. A port someone listens on is not free."""
    from tests.services.services_cli import port_free
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    assert not port_free(port)  # listening
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first: its end waits in TIME_WAIT
    cli.close()
    srv.close()
    with socket.socket() as probe:  # what the probe did before: refused while TIME_WAIT lasts
        with pytest.raises(OSError):
            probe.bind(("127.0.0.1", port))
    assert port_free(port)
