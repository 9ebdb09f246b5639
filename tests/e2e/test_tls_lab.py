"""TLS and SSH through the mirror lab with real tools: `openssl s_server` with certificates
made at test time (a self-signed one with `openssl req`, an expired one with cryptography)
on an internal address, on 443 and on a non-standard port; `curl -k` and `openssl s_client`
as clients, TLS 1.2 and 1.3, a session resumption and a failed handshake. SSH: the real
`ssh` client (openssh-client) against a Python socket server that speaks the identification
string and SSH_MSG_KEXINIT bytes of the OpenSSH 7.4 server captured in the corpus
(sv__vxlan-decoder-03; no sshd is installed here). tcpdump in the collector namespace
records the mirrored VXLAN; the capture is read by the core in-process, and by tshark for
the differential.

Lab prefix mst- (or MIRRORSCOPE_E2E_TLS_PREFIX)."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lab_env import CLIENT, SERVER, Lab, lab_up
from tests.conftest import CORPUS
from tests.l7_records import records
from tests.tls_tshark import tshark_tls
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
PREFIX = os.environ.get("MIRRORSCOPE_E2E_TLS_PREFIX", "mst-")
TOOLS = ("ip", "tc", "ethtool", "curl", "tcpdump", "openssl", "ssh", "tshark")
NAME = "internal.mst.test"
SSH_SERVER = r'''
import socket, sys, time
banner, kexinit = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 2222)); s.listen(4)
while True:
    c, _ = s.accept()
    c.sendall(banner); c.settimeout(3)
    try:
        c.recv(4096); c.sendall(kexinit); time.sleep(0.5); c.recv(65536)
    except OSError:
        pass
    c.close()
'''


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _expired_cert(d: Path) -> tuple[Path, Path]:
    """A self-signed certificate whose validity ended yesterday (openssl req cannot date one
    in the past)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired.mst.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("expired.mst.test")]), False)
            .sign(key, hashes.SHA256()))
    (d / "exp.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "exp.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "exp.pem", d / "exp.key"


def _ssh_bytes(tshark: str) -> tuple[str, str]:
    """The OpenSSH 7.4 server's identification line and KEXINIT packet from the corpus."""
    out = subprocess.run([tshark, "-n", "-r", str(CORPUS / "sv__vxlan-decoder-03__vxlan.pcap"),
                          "-Y", "tcp.srcport == 22 && tcp.dstport == 37180 && tcp.len > 0",
                          "-T", "fields", "-e", "tcp.payload"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert bytes.fromhex(out[0]).startswith(b"SSH-2.0-OpenSSH_7.4")
    return out[0], out[1]


@contextmanager
def _servers(lab: Lab, d: Path, tshark: str) -> Iterator[None]:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(d / "self.key"), "-out", str(d / "self.pem"), "-days", "30", "-subj",
                    f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME},IP:{SERVER}"],
                   check=True, capture_output=True, timeout=60)
    exp, exp_key = _expired_cert(d)
    banner, kexinit = _ssh_bytes(tshark)
    procs = [subprocess.Popen(lab.ns(lab.src) + cmd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
             for cmd in (
                 ["openssl", "s_server", "-accept", f"{SERVER}:4433", "-cert", str(d / "self.pem"),
                  "-key", str(d / "self.key"), "-www", "-alpn", "http/1.1"],
                 ["openssl", "s_server", "-accept", f"{SERVER}:443", "-cert", str(exp),
                  "-key", str(exp_key), "-www"],
                 ["openssl", "s_server", "-accept", f"{SERVER}:8443", "-cert", str(d / "self.pem"),
                  "-key", str(d / "self.key"), "-www", "-tls1_2"],
                 ["openssl", "s_server", "-accept", f"{SERVER}:9443", "-cert", str(d / "self.pem"),
                  "-key", str(d / "self.key"), "-www", "-groups", "P-256"],
                 ["python3", "-c", SSH_SERVER, SERVER, banner, kexinit])]
    try:
        def up() -> bool:
            for p in procs:
                if p.poll() is not None:
                    pytest.fail(f"a lab server exited with {p.returncode}", pytrace=False)
            r = lab.run(lab.client, "bash", "-c", f"for p in 4433 443 8443 9443 2222; do "
                        f"timeout 1 bash -c \"</dev/tcp/{SERVER}/$p\" || exit 1; done", check=False)
            return r.returncode == 0
        wait_until(up, 20, what="the TLS and SSH servers in the lab to listen")
        yield
    finally:
        for p in procs:
            _stop(p)


CLIENTS = [
    # (what, command); curl sends SNI only for a name, hence --resolve
    ("tls12_curl_4433", ["curl", "-sk", "-o", "/dev/null", "--tlsv1.2", "--tls-max", "1.2",
                         "--resolve", f"{NAME}:4433:{SERVER}", f"https://{NAME}:4433/"]),
    ("tls13_curl_4433", ["curl", "-sk", "-o", "/dev/null", "--tlsv1.3",
                         "--resolve", f"{NAME}:4433:{SERVER}", f"https://{NAME}:4433/"]),
    ("tls12_sclient_443", ["openssl", "s_client", "-connect", f"{SERVER}:443", "-servername",
                           "expired.mst.test", "-tls1_2"]),
    ("tls13_sclient_443", ["openssl", "s_client", "-connect", f"{SERVER}:443", "-tls1_3"]),
    ("resume_1", ["openssl", "s_client", "-connect", f"{SERVER}:8443", "-tls1_2",
                  "-sess_out", "{d}/sess"]),
    ("resume_2", ["openssl", "s_client", "-connect", f"{SERVER}:8443", "-tls1_2",
                  "-sess_in", "{d}/sess"]),
    ("failed_13_vs_12", ["openssl", "s_client", "-connect", f"{SERVER}:8443", "-tls1_3"]),
    # The client's key share is X25519, the server takes only P-256: a HelloRetryRequest.
    ("hello_retry", ["openssl", "s_client", "-connect", f"{SERVER}:9443", "-tls1_3", "-groups",
                     "X25519:P-256"]),
    ("ssh", ["ssh", "-p", "2222", "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
             f"mst@{SERVER}"]),
]


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Iterator[tuple[Path, dict[str, int]]]:
    """The mirrored capture of every client above, and each client's source port."""
    import shutil
    tshark = shutil.which("tshark")
    assert tshark, "tshark is required (.ci/setup.sh installs it)"
    d = tmp_path_factory.mktemp("tlslab")
    cap = d / "tls-lab.pcap"
    with lab_up(PREFIX, TOOLS) as lab, _servers(lab, d, tshark):
        p = subprocess.Popen(lab.ns(lab.collector) + ["timeout", "120", "tcpdump", "-i", "eth0",
                                                      "-n", "-s", "9216", "-Z", "root", "-w",
                                                      str(cap), "udp", "port", "4789"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            def listening() -> bool:
                line = p.stderr.readline()
                if not line and p.poll() is not None:
                    pytest.fail(f"tcpdump exited with {p.returncode}", pytrace=False)
                return "listening on" in line
            wait_until(listening, 10, interval=0, what="tcpdump to start listening")
            ports = {}
            for what, cmd in CLIENTS:
                cmd = [c.replace("{d}", str(d)) for c in cmd]
                # s_client reads stdin: an empty one makes it close after the handshake.
                r = subprocess.run(lab.ns(lab.client) + ["timeout", "8"] + cmd,
                                   input="", capture_output=True, text=True, timeout=30)
                ports[what] = r.returncode
                time.sleep(0.3)
            time.sleep(1.0)  # the last mirror copies
        finally:
            _stop(p)
    yield cap, ports


@pytest.fixture(scope="module")
def ours(capture):
    from stream_app.core.detectors import DetectConfig
    return records(capture[0], detect=DetectConfig())


def _by_server(recs, port):
    return [t for t in recs.tls if t.dstport == port and t.dstaddr == SERVER]


def test_tls_records_from_real_clients(ours):
    assert all(t.srcaddr == CLIENT for t in ours.tls)
    on4433 = sorted(_by_server(ours, 4433), key=lambda t: t.ts)
    assert [t.version for t in on4433] == ["TLSv1.2", "TLSv1.3"]
    for t in on4433:  # a non-standard port: named by content
        assert t.server_name == NAME and "http/1.1" in t.alpn_offered and t.established
        assert t.ja4.startswith(("t12d", "t13d")) and t.ja4s.startswith(t.ja4[:3])
        assert not t.tags
    t12, t13 = on4433
    # The server's ALPN choice: in the ServerHello up to 1.2, encrypted (EncryptedExtensions)
    # in 1.3.
    assert (t12.alpn, t13.alpn) == ("http/1.1", None)
    [leaf] = t12.cert_chain
    assert leaf.subject == f"CN={NAME}" and leaf.issuer == leaf.subject and leaf.self_signed
    assert leaf.sans == [NAME, SERVER] and leaf.not_after > t12.ts > leaf.not_before
    assert t13.cert_chain == []  # encrypted in TLS 1.3
    e12, e13 = sorted(_by_server(ours, 443), key=lambda t: t.ts)
    assert e12.server_name == "expired.mst.test" and e12.cert_chain[0].not_after < e12.ts
    assert e13.version == "TLSv1.3" and e13.established
    r1, r2, failed = sorted(_by_server(ours, 8443), key=lambda t: t.ts)
    assert (r1.resumed, r2.resumed) == (False, True) and r1.cert_chain and not r2.cert_chain
    assert r2.established and r2.version == "TLSv1.2"
    assert not failed.established and failed.alert == "protocol_version"
    assert "failed" in failed.tags and failed.version is None
    [hrr] = _by_server(ours, 9443)
    assert hrr.tags == ["hello_retry"] and hrr.established and hrr.version == "TLSv1.3"
    flows = {(f.dstport, f.srcport): f for f in ours.flows if f.dstaddr == SERVER}
    for t in ours.tls:
        f = flows[(t.dstport, t.srcport)]
        assert f.app_proto == "tls" and f.app_proto_source == "content"
        assert f.community_id == t.community_id


def test_tls_matches_tshark(capture, ours, tshark):
    theirs = tshark_tls(tshark, capture[0])
    mine = {(t.srcaddr, t.srcport): t for t in ours.tls}
    assert set(theirs) == set(mine) and len(mine) == 8
    for key, h in theirs.items():
        t = mine[key]
        assert (t.server_name, t.alpn_offered, t.ja4) == (h["server_name"], h["alpn_offered"],
                                                          h["ja4"]), key
        assert (t.version, t.alpn, t.ja4s) == (h["version"], h["alpn"], h["ja4s"]), key
        assert [c.sha256 for c in t.cert_chain] == h["certs"], key


def test_self_signed_and_expired_detectors_alert(ours):
    by_type = {}
    for a in ours.alerts:
        by_type.setdefault(a.type, []).append(a)
    assert {tuple(a.targets) for a in by_type["tls_self_signed_certificate"]} == {
        (f"{SERVER}:4433",), (f"{SERVER}:443",), (f"{SERVER}:8443",)}
    assert [a.targets for a in by_type["tls_expired_certificate"]] == [[f"{SERVER}:443"]]
    assert all(a.source is None for a in by_type["tls_self_signed_certificate"])
    assert "rare_tls_fingerprint" not in by_type  # still warming up


def test_ssh_banners_and_hassh_from_a_real_client(ours, capture, tshark):
    [s] = ours.ssh
    assert s.server == "SSH-2.0-OpenSSH_7.4" and s.client.startswith("SSH-2.0-OpenSSH_")
    assert s.hassh_server == "6832f1ce43d4397c2c0a3e2f8c94334e"  # the corpus server's
    out = subprocess.run([tshark, "-n", "-r", str(capture[0]), "-d", "tcp.port==2222,ssh",
                          "-Y", "ssh.kex.hassh", "-T",
                          "fields", "-e", "ssh.kex.hassh"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [s.hassh]
    assert s.kex_alg and s.cipher_alg and "no_kexinit" not in s.tags
    [f] = [f for f in ours.flows if f.dstport == 2222]
    assert f.app_proto == "ssh" and f.app_proto_source == "content"
