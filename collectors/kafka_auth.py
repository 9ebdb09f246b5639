"""How every MirrorScope Kafka client authenticates: the collectors' publisher (kafka-python),
the worker (Faust on aiokafka) and the sinks (kafka-python) read one set of settings, so one
deployment value means the same thing everywhere.

Mechanisms:
- ``AWS_MSK_IAM``: Amazon MSK's IAM authentication over SASL/OAUTHBEARER. The token is a SigV4
  presigned URL made by AWS's ``aws-msk-iam-sasl-signer-python`` from the default credential
  chain (IRSA on EKS, the instance profile on EC2), renewed before it expires.
- ``SCRAM-SHA-256`` / ``SCRAM-SHA-512`` / ``PLAIN``: a user name and password (from the
  environment or a file, never a command line).
- no mechanism with ``SSL``: TLS only (optionally mutual, with a client certificate).
TLS always verifies the broker's certificate and host name (against ``cafile`` or the system's
CAs): a deployment that wants otherwise must say so.

Environment (the chart's ConfigMap and Secret set these):
``MIRRORSCOPE_KAFKA_SECURITY`` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
``MIRRORSCOPE_KAFKA_SASL_MECHANISM``, ``MIRRORSCOPE_KAFKA_SASL_USERNAME``,
``MIRRORSCOPE_KAFKA_SASL_PASSWORD`` or ``MIRRORSCOPE_KAFKA_SASL_PASSWORD_FILE``,
``MIRRORSCOPE_KAFKA_CA``, ``MIRRORSCOPE_KAFKA_CERT`` / ``MIRRORSCOPE_KAFKA_KEY`` (mutual TLS),
and the region of MSK IAM tokens from ``MIRRORSCOPE_KAFKA_REGION``, ``AWS_REGION`` or
``AWS_DEFAULT_REGION``.

The client libraries are imported only when a client is made, so ``mirrorscope analyze`` never
loads them.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "AWS_MSK_IAM")
# Renew a token this long before it expires (MSK's tokens live 900 s), so a connection made
# just before expiry still authenticates.
RENEW_BEFORE_S = 120.0


class KafkaAuthError(ValueError):
    """Settings that cannot work; the message names the setting."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = None
    check_hostname: bool = True
    region: str | None = None

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise KafkaAuthError(f"MIRRORSCOPE_KAFKA_SECURITY={self.protocol!r}: use one of "
                                 f"{', '.join(PROTOCOLS)}")
        sasl = self.protocol.startswith("SASL_")
        if sasl and self.mechanism not in MECHANISMS:
            raise KafkaAuthError(f"MIRRORSCOPE_KAFKA_SASL_MECHANISM={self.mechanism!r} with "
                                 f"{self.protocol}: use one of {', '.join(MECHANISMS)}")
        if not sasl and self.mechanism:
            raise KafkaAuthError(f"MIRRORSCOPE_KAFKA_SASL_MECHANISM={self.mechanism} needs "
                                 "MIRRORSCOPE_KAFKA_SECURITY=SASL_SSL (or SASL_PLAINTEXT)")
        if self.mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
                self.username and self.password):
            raise KafkaAuthError(f"{self.mechanism} needs MIRRORSCOPE_KAFKA_SASL_USERNAME and "
                                 "MIRRORSCOPE_KAFKA_SASL_PASSWORD (or _PASSWORD_FILE)")
        if self.mechanism == "AWS_MSK_IAM" and not self.region:
            raise KafkaAuthError("AWS_MSK_IAM needs the cluster's region: set AWS_REGION "
                                 "(or MIRRORSCOPE_KAFKA_REGION)")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> KafkaSecurity:
        env = os.environ if environ is None else environ
        password = env.get("MIRRORSCOPE_KAFKA_SASL_PASSWORD") or None
        pw_file = env.get("MIRRORSCOPE_KAFKA_SASL_PASSWORD_FILE")
        if password is None and pw_file:
            try:
                password = Path(pw_file).read_text().strip()
            except OSError as exc:
                raise KafkaAuthError(f"MIRRORSCOPE_KAFKA_SASL_PASSWORD_FILE={pw_file}: {exc}") from exc
        values = dict(
            protocol=(env.get("MIRRORSCOPE_KAFKA_SECURITY") or "PLAINTEXT").upper(),
            mechanism=(env.get("MIRRORSCOPE_KAFKA_SASL_MECHANISM") or "").upper() or None,
            username=env.get("MIRRORSCOPE_KAFKA_SASL_USERNAME") or None,
            password=password,
            cafile=env.get("MIRRORSCOPE_KAFKA_CA") or None,
            certfile=env.get("MIRRORSCOPE_KAFKA_CERT") or None,
            keyfile=env.get("MIRRORSCOPE_KAFKA_KEY") or None,
            region=region_from_env(env),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def describe(self) -> dict:
        """For logs: what is used, never a secret."""
        return {"protocol": self.protocol, "mechanism": self.mechanism,
                "username": self.username, "ca": self.cafile, "region": self.region}

    def ssl_context(self):
        import ssl
        ctx = ssl.create_default_context(cafile=self.cafile)  # verifies certificate and host
        ctx.check_hostname = self.check_hostname  # the certificate itself is always verified
        if self.certfile:
            ctx.load_cert_chain(self.certfile, self.keyfile, self.key_password)
        return ctx

    def kafka_python(self) -> dict:
        """Keyword arguments for kafka-python's KafkaProducer/KafkaConsumer/KafkaAdminClient."""
        return self._client_conf(kafka_python_msk_iam)

    def aiokafka(self) -> dict:
        """Keyword arguments for aiokafka's clients."""
        return self._client_conf(aiokafka_msk_iam)

    def _client_conf(self, msk_iam_provider) -> dict:
        # The two libraries take the same keywords; only their token-provider base differs.
        conf: dict = {"security_protocol": self.protocol}
        if self.tls:
            conf["ssl_context"] = self.ssl_context()
        if self.mechanism == "AWS_MSK_IAM":
            conf["sasl_mechanism"] = "OAUTHBEARER"
            conf["sasl_oauth_token_provider"] = msk_iam_provider(MskIamToken(self.region))
        elif self.mechanism:
            conf.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                        sasl_plain_password=self.password)
        return conf

    def faust_credentials(self):
        """Faust's ``broker_credentials`` (None for PLAINTEXT)."""
        if self.protocol == "PLAINTEXT":
            return None
        import faust
        ctx = self.ssl_context() if self.tls else None
        if self.mechanism == "AWS_MSK_IAM":
            return faust.OAuthCredentials(oauth_cb=aiokafka_msk_iam(MskIamToken(self.region)),
                                          ssl_context=ctx)
        if self.mechanism:
            return faust.SASLCredentials(username=self.username, password=self.password,
                                         mechanism=self.mechanism, ssl_context=ctx)
        return faust.SSLCredentials(ctx)


def region_from_env(environ=None) -> str | None:
    env = os.environ if environ is None else environ
    return (env.get("MIRRORSCOPE_KAFKA_REGION") or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION") or None)


class MskIamToken:
    """An MSK IAM token, made on first use and renewed ``RENEW_BEFORE_S`` before it expires;
    one per client, shared by its connections (thread-safe: kafka-python connects from its
    I/O thread)."""

    def __init__(self, region: str, generate=None, clock=time.time):
        self.region = region
        self._generate = generate
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self.made = 0

    def get(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires - RENEW_BEFORE_S:
                gen = self._generate
                if gen is None:
                    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
                    gen = MSKAuthTokenProvider.generate_auth_token
                token, expiry_ms = gen(self.region)
                self._token, self._expires = token, expiry_ms / 1000.0
                self.made += 1
            return self._token


def kafka_python_msk_iam(source: MskIamToken):
    from kafka.net.sasl.oauth import AbstractTokenProvider

    class KafkaPythonMskIam(AbstractTokenProvider):
        def token(self):
            return source.get()

    return KafkaPythonMskIam()


def aiokafka_msk_iam(source: MskIamToken):
    import asyncio

    from aiokafka.abc import AbstractTokenProvider

    class AioKafkaMskIam(AbstractTokenProvider):
        async def token(self):
            # Signing reads credentials (an STS call with IRSA): off the event loop.
            return await asyncio.get_running_loop().run_in_executor(None, source.get)

    return AioKafkaMskIam()
