"""A real Apache Kafka broker on this machine: single-node KRaft (broker + controller in one
JVM), from Maven Central's org.apache.kafka:kafka_2.13 jars, on free loopback ports. The test
suite and ``mirrorscope services up`` use it.

The jars live in .ci/cache/kafka-<version>/ of the repository (gitignored), or in the folder
named by ``MIRRORSCOPE_KAFKA_JARS``; .ci/setup.sh fetches them with
``mvn dependency:copy-dependencies`` from tests/services/kafka-pom.xml, and ``ensure_jars()``
does the same when they are missing (a developer's machine). Java 17 runs Kafka 3.9.

    k = LocalKafka(workdir); k.start(); k.create_topic("t", 6); ...; k.stop(); k.start()

``stop()``/``start()`` keep the data directory and the ports, so a restarted broker is the
same broker (the outage test relies on it).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

__all__ = ["ROOT", "KAFKA_VERSION", "POM", "LocalKafka", "jar_dir", "jars_present", "ensure_jars",
           "free_port", "port_open", "create_topic", "consume_all"]

# The repository (the package is installed editable; elsewhere set MIRRORSCOPE_KAFKA_JARS).
ROOT = Path(__file__).resolve().parents[2]
KAFKA_VERSION = os.environ.get("MIRRORSCOPE_TEST_KAFKA_VERSION", "3.9.1")
POM = ROOT / "tests" / "services" / "kafka-pom.xml"


def jar_dir(version: str = KAFKA_VERSION) -> Path:
    """ROOT/.ci/cache/kafka-<version>, or ``$MIRRORSCOPE_KAFKA_JARS`` when set."""
    env = os.environ.get("MIRRORSCOPE_KAFKA_JARS")
    if env:
        return Path(env).expanduser()
    return ROOT / ".ci" / "cache" / f"kafka-{version}"


def jars_present(version: str = KAFKA_VERSION) -> bool:
    return (jar_dir(version) / f"kafka_2.13-{version}.jar").exists()


def ensure_jars(version: str = KAFKA_VERSION) -> Path:
    d = jar_dir(version)
    if jars_present(version):
        return d
    mvn = shutil.which("mvn")
    if mvn is None or not POM.exists():
        raise RuntimeError(f"Kafka jars missing in {d} and no mvn (or {POM}) to fetch them: "
                           "run bash .ci/setup.sh, or set MIRRORSCOPE_KAFKA_JARS to a folder "
                           f"holding kafka_2.13-{version}.jar and its dependencies")
    subprocess.run([mvn, "-q", "-B", "-f", str(POM), f"-Dkafka.version={version}",
                    "dependency:copy-dependencies", f"-DoutputDirectory={d}"],
                   check=True, timeout=600)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


_port_open = port_open


class LocalKafka:
    def __init__(self, workdir: Path, version: str = KAFKA_VERSION, port: int | None = None,
                 controller_port: int | None = None):
        self.workdir = Path(workdir)
        self.version = version
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.proc: subprocess.Popen | None = None
        self.controllable = True
        self._formatted = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java is required for the Kafka broker (Debian: openjdk-17-jre-headless)")
        return [java, "-Xms256m", "-Xmx768m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{self.workdir / 'log4j.properties'}",
                "-cp", str(ensure_jars(self.version)) + "/*"]

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, file\n"
            "log4j.logger.kafka=INFO\n"
            "log4j.logger.org.apache.kafka=WARN\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={self.workdir / 'broker.log'}\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n")
        props = self.workdir / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={self.workdir / 'data'}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "message.max.bytes=8388608",
            "num.network.threads=2",
            "num.io.threads=4",
            "log.segment.bytes=268435456",
            "",
        ]))
        return props

    def start(self, timeout: float = 90.0) -> None:
        props = self.workdir / "server.properties"
        if not self._formatted:
            props = self._write_config()
            # A data folder formatted by an earlier LocalKafka on the same workdir (`mirrorscope
            # services up` after `down`) keeps its cluster id: formatting it again with a new
            # one fails, so only a fresh folder is formatted.
            if not (self.workdir / "data" / "meta.properties").exists():
                cluster = "-"
                while not cluster[0].isalnum():  # an id starting with "-" reads as an option
                    cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
                fmt = subprocess.run(self._java() + ["kafka.tools.StorageTool", "format", "-t",
                                                     cluster, "-c", str(props), "--ignore-formatted"],
                                     timeout=120, capture_output=True, text=True)
                if fmt.returncode != 0:
                    why = [ln for ln in (fmt.stderr + fmt.stdout).splitlines()
                           if ln.strip() and not ln.startswith(("\tat ", "log4j:"))]
                    raise RuntimeError(f"formatting Kafka's storage in {self.workdir / 'data'} "
                                       f"failed: {' | '.join(why[:3]) or fmt.returncode}")
            self._formatted = True
        out = open(self.workdir / "stdout.log", "ab")
        # Its own session, stdin closed: it survives the process that started it (the test
        # session, or `mirrorscope services up`, which leaves it running).
        self.proc = subprocess.Popen(self._java() + ["kafka.Kafka", str(props)],
                                     stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Kafka exited with {self.proc.returncode}; see "
                                   f"{self.workdir / 'broker.log'} and stdout.log")
            if port_open(self.port) and self._metadata_ok():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Kafka did not become ready in {timeout:.0f} s; see {self.workdir}")

    def _metadata_ok(self) -> bool:
        from kafka import KafkaAdminClient
        try:
            a = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000,
                                 bootstrap_timeout_ms=3000)
        except Exception:
            return False
        try:
            a.list_topics()
            return True
        except Exception:
            return False
        finally:
            a.close()

    def stop(self, timeout: float = 30.0) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        self.proc = None
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def create_topic(bootstrap: str, name: str, partitions: int, timeout: float = 30.0) -> None:
    """Create a topic and wait until its metadata lists every partition with a leader."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        a.create_topics([NewTopic(name, partitions, 1)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            md = a.describe_topics([name])
            parts = md[0].get("partitions", []) if md else []
            if len(parts) == partitions and all(p.get("leader", p.get("leader_id", -1)) >= 0
                                                for p in parts):
                return
            time.sleep(0.1)
        raise RuntimeError(f"topic {name} not ready")
    finally:
        a.close()


def consume_all(bootstrap: str, topic: str, expect_messages: int | None = None,
                timeout: float = 30.0, idle: float = 2.0) -> list:
    """Every message of a topic from the start: stops at ``expect_messages``, or after
    ``idle`` seconds without a new message once the end offsets are reached."""
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=500,
                      fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        end = c.end_offsets(parts)
        msgs = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            got = c.poll(timeout_ms=300, max_records=10000)
            for recs in got.values():
                msgs.extend(recs)
            if got:
                last = time.monotonic()
            if expect_messages is not None and len(msgs) >= expect_messages:
                break
            done = all(c.position(tp) >= end[tp] for tp in parts)
            if done and expect_messages is None and time.monotonic() - last >= 0:
                break
            if done and time.monotonic() - last > idle:
                break
        return msgs
    finally:
        c.close()
