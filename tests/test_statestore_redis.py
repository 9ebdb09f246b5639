"""The Redis side of distributed mode against real redis-server processes: partition snapshots
(stream_app/state/store.py) and the detectors' shared state (stream_app/state/detectors.py), on a
standalone server with AUTH and on a three-node Redis Cluster (hash tags keep a partition's
keys in one slot; a wrong layout fails there with CROSSSLOT)."""

from __future__ import annotations

import subprocess
import time

import pytest
import redis

from schemas.records import PacketBatch
from stream_app.core.detectors import Detectors
from stream_app.core.processor import CoreConfig, Processor
from stream_app.state.detectors import RedisDetectorState
from stream_app.state.codec import Codec
from stream_app.state.partition import PartitionState
from tests.services.kafka_service import free_port
from tests.services.redis_service import LocalRedis, redis_server_exe
from stream_app.state.store import Fenced, RedisConfig, RedisStore, StateLost, connect
from tests.test_flowstate import records_of
from tests.test_worker_kafka import scan
from tests.services.traffic import capture_of, tcp_flows, write_pcap

CODEC = Codec(b"k")
CONFIG = CoreConfig(detect=None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three masters, no replicas, slots spread by redis-cli --cluster create."""
    d = tmp_path_factory.mktemp("redis-cluster")
    ports = [free_port() for _ in range(3)]
    procs = []
    for p in ports:
        w = d / str(p)
        w.mkdir()
        # The bus port is set explicitly: by default it is port + 10000, which is past 65535
        # for a third of the ports free_port() can return.
        procs.append(subprocess.Popen(
            [redis_server_exe(), "--port", str(p), "--cluster-port", str(free_port()),
             "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(w / "nodes.conf"), "--save", "", "--appendonly", "no",
             "--dir", str(w), "--logfile", str(w / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    try:
        for p, pr in zip(ports, procs):
            # One attempt per try: redis-py would otherwise retry a refused connection for
            # seconds each time.
            client = redis.Redis(port=p, socket_connect_timeout=1, retry=None,
                                 retry_on_error=[])
            for _ in range(100):
                if pr.poll() is not None:
                    pytest.fail(f"redis-server on {p} exited: "
                                + (d / str(p) / "redis.log").read_text()[-500:])
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
        subprocess.run(["redis-cli", "--cluster", "create",
                        *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for _ in range(200):
            info = redis.Redis(port=ports[0]).cluster("info")
            if info.get("cluster_state") == "ok":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the cluster did not come up")
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for pr in procs:
            pr.terminate()
        for pr in procs:
            pr.wait(10)


def roundtrip(store: RedisStore, name: str) -> None:
    recs = records_of("zeek__wikipedia.pcap")
    st = PartitionState(name, CONFIG, CODEC)
    epoch = store.claim(name)
    st.apply(0, PacketBatch(1, b"", recs[:60]))
    snap = st.snapshot()
    store.save(name, epoch, snap)
    st.saved_ok(snap)
    st.apply(1, PacketBatch(1, b"", recs[60:]))
    snap = st.snapshot()
    store.save(name, epoch, snap)
    st.saved_ok(snap)
    # A successor restores exactly what the owner holds.
    epoch2 = store.claim(name)
    back = PartitionState.restore(name, CONFIG, CODEC, *store.load(name))
    assert back.offset == 1 and back.flows_held == st.flows_held
    a, b = back.proc.finish(), st.proc.finish()
    key = lambda r: r.flow_id  # noqa: E731
    assert sorted(a.flows, key=key) == sorted(b.flows, key=key)
    assert sorted(a.http, key=lambda h: h.http_id) == sorted(b.http, key=lambda h: h.http_id)
    # The old owner is fenced out.
    with pytest.raises(Fenced):
        store.save(name, epoch, st.snapshot())
    store.save(name, epoch2, back.snapshot())


def test_snapshots_on_a_password_protected_redis(tmp_path):
    r = LocalRedis(tmp_path / "redis", password="s3cret/pw")
    r.start()
    try:
        client = connect(RedisConfig(url=r.url))
        store = RedisStore(client)
        roundtrip(store, "g:packets:0")
        client.flushall()  # the server lost everything (a restart without persistence)
        st = PartitionState("g:packets:0", CONFIG, CODEC)
        with pytest.raises(StateLost):
            store.save("g:packets:0", 2, st.snapshot())
        bad = connect(RedisConfig(url=r.url.replace("s3cret%2Fpw", "wrong"), retries=0))
        with pytest.raises(redis.AuthenticationError):
            RedisStore(bad).claim("x")
    finally:
        r.stop()


def test_snapshots_on_redis_cluster(cluster):
    store = RedisStore(connect(RedisConfig(url=cluster, cluster=True)))
    for p in range(4):  # partitions land on different nodes; each one's keys stay together
        roundtrip(store, f"g:packets:{p}")


def _detect(state_for, halves: int):
    """Flow records of a synthetic capture with a SYN scan, observed by ``halves`` detector
    engines sharing state_for()'s store (as workers do), each seeing its share."""
    import tempfile
    from pathlib import Path

    from collectors.capture import open_capture
    from collectors.decode import Decoder
    from collectors.source import capture_batches
    grams = tcp_flows(40, seed=3)
    grams = grams[:200] + scan() + grams[200:]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.pcap"
        write_pcap(path, capture_of(grams), step_ns=5_000_000)
        recs = [r for b in capture_batches(open_capture(path), Decoder()) for r in b]
    proc = Processor(CoreConfig(detect=None, l7=None))
    flows = proc.process(recs).flows + proc.finish().flows
    engines = [Detectors(state=state_for()) for _ in range(halves)]
    alerts = []
    for i, f in enumerate(flows):
        alerts += engines[i % halves].observe([f], [])
    return alerts


def test_two_detector_engines_sharing_redis_alert_once(cluster):
    client = connect(RedisConfig(url=cluster, cluster=True))
    client.flushall()
    alone = _detect(lambda: None, 1)  # in memory, one engine: the reference
    shared = _detect(lambda: RedisDetectorState(client, prefix="md:t"), 2)
    assert [a.type for a in alone] == ["port_scan"]
    assert [(a.alert_id, a.type, a.source, a.targets) for a in shared] == \
        [(a.alert_id, a.type, a.source, a.targets) for a in alone]


def _tls_files(d):
    """A CA and a server certificate for 127.0.0.1, made with the openssl command."""
    def run(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True, timeout=60)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"), "-CAkey",
        str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext.cnf"),
        "-out", str(d / "server.crt"))


def test_snapshots_over_tls(tmp_path):
    _tls_files(tmp_path)
    port = free_port()
    p = subprocess.Popen(
        [redis_server_exe(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(tmp_path / "server.crt"),
         "--tls-key-file", str(tmp_path / "server.key"),
         "--tls-ca-cert-file", str(tmp_path / "ca.crt"), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"rediss://127.0.0.1:{port}/0"
        client = connect(RedisConfig(url=url, ssl_ca_certs=str(tmp_path / "ca.crt"), retries=0))
        for _ in range(100):
            assert p.poll() is None, "redis-server with TLS exited"
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        roundtrip(RedisStore(client), "g:packets:0")
        # Without the CA the server's certificate is refused: TLS is verified, not just used.
        untrusted = connect(RedisConfig(url=url, retries=0))
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            untrusted.ping()
    finally:
        p.terminate()
        p.wait(10)
