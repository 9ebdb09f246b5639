"""A real Kafka broker with the listeners Amazon MSK offers, for the authentication tests:

- PLAINTEXT (the tests' own admin: topics, reading results),
- SASL_SSL with OAUTHBEARER validated as MSK's IAM authentication is (tests/services/java/
  MskIamTokenValidator.java: the token's presigned-URL shape, scope, time window and SigV4
  signature against known test credentials; IAM policies are not evaluated),
- SASL_SSL with SCRAM-SHA-512 (a user made through the broker's admin API),
- SSL (TLS only).
TLS uses a CA and a server certificate made with openssl for 127.0.0.1/localhost, so clients
verify the broker exactly as they would verify MSK's certificate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.services.kafka_service import LocalKafka, ensure_jars, free_port

JAVA_SRC = Path(__file__).with_name("java") / "MskIamTokenValidator.java"
REGION = "us-east-1"
# Static test credentials the validator knows: a token signed with any other secret is refused.
ACCESS_KEY = "AKIAMIRRORSCOPETEST1"
SECRET_KEY = "mirrorscope-test-secret-key/1234567890abc"
SCRAM_USER = "mirrorscope"
SCRAM_PASSWORD = "scram-test-password"


def make_tls(d: Path) -> tuple[Path, Path]:
    """(CA certificate, server PEM with key and chain) for 127.0.0.1 and localhost."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca = d / "ca.key", d / "ca.pem"
    key, csr, crt, pem = d / "server.key", d / "server.csr", d / "server.crt", d / "server.pem"
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=mirrorscope-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    ssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))
    # Kafka reads a PEM key store: the PKCS#8 key, then the certificate chain.
    pk8 = subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(key)],
                         check=True, capture_output=True, timeout=60).stdout
    pem.write_bytes(pk8 + crt.read_bytes() + ca.read_bytes())
    return ca, pem


def compile_validator(d: Path) -> Path:
    javac = shutil.which("javac")
    if javac is None:
        raise RuntimeError("javac is required (Debian: openjdk-17-jdk-headless; .ci/setup.sh)")
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run([javac, "-d", str(d), "-cp", f"{ensure_jars()}/*", str(JAVA_SRC)],
                   check=True, capture_output=True, timeout=120)
    return d


class SecureKafka(LocalKafka):
    def __init__(self, workdir: Path, **kw):
        super().__init__(workdir, **kw)
        self.sasl_port = free_port()
        self.scram_port = free_port()
        self.ssl_port = free_port()
        self.ca, self._pem = make_tls(Path(workdir) / "tls")
        self._classes = compile_validator(Path(workdir) / "classes")

    @property
    def iam_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def scram_bootstrap(self) -> str:
        return f"127.0.0.1:{self.scram_port}"

    @property
    def tls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    def _java(self) -> list[str]:
        cmd = super()._java()
        cmd[-1] += os.pathsep + str(self._classes)  # the classpath is the last argument
        return cmd

    def _write_config(self) -> Path:
        props = super()._write_config()
        lines = []
        for line in props.read_text().splitlines():
            if line.startswith("listeners="):
                line += (f",IAM://127.0.0.1:{self.sasl_port},SCRAM://127.0.0.1:{self.scram_port}"
                         f",TLS://127.0.0.1:{self.ssl_port}")
            elif line.startswith("advertised.listeners="):
                line += (f",IAM://127.0.0.1:{self.sasl_port},SCRAM://127.0.0.1:{self.scram_port}"
                         f",TLS://127.0.0.1:{self.ssl_port}")
            elif line.startswith("listener.security.protocol.map="):
                line += ",IAM:SASL_SSL,SCRAM:SASL_SSL,TLS:SSL"
            lines.append(line)
        secrets = f"{ACCESS_KEY}:{SECRET_KEY}"
        for name in ("iam", "scram", "tls"):
            lines += [f"listener.name.{name}.ssl.keystore.type=PEM",
                      f"listener.name.{name}.ssl.keystore.location={self._pem}"]
        lines += [
            "listener.name.iam.sasl.enabled.mechanisms=OAUTHBEARER",
            "listener.name.iam.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security."
            # the broker's own login token (the unsecured default) needs a subject claim
            'oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker" '
            f'region="{REGION}" secrets="{secrets}";',
            "listener.name.iam.oauthbearer.sasl.server.callback.handler.class=MskIamTokenValidator",
            "listener.name.scram.sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.scram.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security."
            "scram.ScramLoginModule required;",
            "",
        ]
        props.write_text("\n".join(lines))
        return props

    def start(self, timeout: float = 90.0) -> None:
        super().start(timeout)
        # The SCRAM user, through the broker's admin API (KRaft stores it in the metadata log).
        subprocess.run(self._java() + [
            "kafka.admin.ConfigCommand", "--bootstrap-server", self.bootstrap, "--alter",
            "--add-config", f"SCRAM-SHA-512=[iterations=4096,password={SCRAM_PASSWORD}]",
            "--entity-type", "users", "--entity-name", SCRAM_USER],
            check=True, capture_output=True, timeout=120)

    def validator_log(self) -> str:
        """What the MSK IAM validator decided, one line a connection."""
        out = self.workdir / "stdout.log"
        return "\n".join(ln for ln in out.read_text(errors="replace").splitlines()
                         if ln.startswith("msk-iam-validator:"))
