"""Kafka authentication as deployed on MSK, against a real broker (tests/services/kafka_sasl.py):
IAM through SASL/OAUTHBEARER with tokens from AWS's own signer library, SCRAM-SHA-512 and TLS,
for both client libraries MirrorScope uses (kafka-python: collectors and sinks; aiokafka: the
worker). What is verified and what is not: the broker checks each IAM token's presigned-URL
shape, scope, time window and SigV4 signature against the test's static credentials; it does not
evaluate IAM policies, which real MSK does."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from collectors.kafka_auth import KafkaAuthError, KafkaSecurity, MskIamToken
from tests.services.kafka_sasl import (ACCESS_KEY, REGION, SCRAM_PASSWORD, SCRAM_USER, SECRET_KEY,
                                 SecureKafka)
from tests.services.kafka_service import consume_all, create_topic


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    k = SecureKafka(tmp_path_factory.mktemp("secure-kafka"))
    k.start()
    yield k
    k.stop()


@pytest.fixture
def aws_env(monkeypatch):
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)


def produce_kafka_python(bootstrap: str, topic: str, conf: dict, value: bytes) -> None:
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=15000, max_block_ms=15000,
                      **conf)
    try:
        p.send(topic, value).get(timeout=15)
    finally:
        p.close()


def iam_env(broker) -> dict:
    return {"MIRRORSCOPE_KAFKA_SECURITY": "SASL_SSL", "MIRRORSCOPE_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM",
            "MIRRORSCOPE_KAFKA_CA": str(broker.ca), "AWS_REGION": REGION}


def test_msk_iam_token_from_aws_signer_is_accepted_by_kafka_python(broker, aws_env):
    topic = f"iam-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 1)
    sec = KafkaSecurity.from_env(iam_env(broker))
    produce_kafka_python(broker.iam_bootstrap, topic, sec.kafka_python(), b"through IAM")
    assert [m.value for m in consume_all(broker.bootstrap, topic, 1)] == [b"through IAM"]
    assert f"accepted {ACCESS_KEY}" in broker.validator_log()


def test_msk_iam_with_aiokafka_the_workers_client(broker, aws_env):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    topic = f"iam-aio-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 1)
    sec = KafkaSecurity.from_env(iam_env(broker))

    async def roundtrip():
        p = AIOKafkaProducer(bootstrap_servers=broker.iam_bootstrap, **sec.aiokafka())
        await p.start()
        try:
            await p.send_and_wait(topic, b"aio through IAM")
        finally:
            await p.stop()
        c = AIOKafkaConsumer(topic, bootstrap_servers=broker.iam_bootstrap,
                             auto_offset_reset="earliest", **sec.aiokafka())
        await c.start()
        try:
            m = await asyncio.wait_for(c.getone(), 20)
            return m.value
        finally:
            await c.stop()

    assert asyncio.run(roundtrip()) == b"aio through IAM"


def test_a_token_signed_with_the_wrong_secret_is_refused(broker, monkeypatch, aws_env):
    from kafka.errors import KafkaError
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    topic = f"iam-bad-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 1)
    sec = KafkaSecurity.from_env(iam_env(broker))
    with pytest.raises(KafkaError):
        produce_kafka_python(broker.iam_bootstrap, topic, sec.kafka_python(), b"forged")
    assert "refused: signature does not match" in broker.validator_log()
    assert consume_all(broker.bootstrap, topic, timeout=3, idle=0.5) == []


def test_scram_over_tls_and_a_wrong_password(broker, tmp_path):
    from kafka.errors import KafkaError
    topic = f"scram-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 1)
    pw = tmp_path / "pw"
    pw.write_text(SCRAM_PASSWORD + "\n")
    env = {"MIRRORSCOPE_KAFKA_SECURITY": "SASL_SSL", "MIRRORSCOPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "MIRRORSCOPE_KAFKA_SASL_USERNAME": SCRAM_USER, "MIRRORSCOPE_KAFKA_SASL_PASSWORD_FILE": str(pw),
           "MIRRORSCOPE_KAFKA_CA": str(broker.ca)}
    produce_kafka_python(broker.scram_bootstrap, topic, KafkaSecurity.from_env(env).kafka_python(),
                         b"through SCRAM")
    assert [m.value for m in consume_all(broker.bootstrap, topic, 1)] == [b"through SCRAM"]
    bad = {**env, "MIRRORSCOPE_KAFKA_SASL_PASSWORD": "wrong"}
    with pytest.raises(KafkaError):
        produce_kafka_python(broker.scram_bootstrap, topic, KafkaSecurity.from_env(bad).kafka_python(),
                             b"nope")


def test_tls_verifies_the_broker_certificate(broker):
    from kafka.errors import KafkaError
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 1)
    good = KafkaSecurity.from_env({"MIRRORSCOPE_KAFKA_SECURITY": "SSL", "MIRRORSCOPE_KAFKA_CA": str(broker.ca)})
    produce_kafka_python(broker.tls_bootstrap, topic, good.kafka_python(), b"through TLS")
    assert [m.value for m in consume_all(broker.bootstrap, topic, 1)] == [b"through TLS"]
    # Without the test CA the system's CAs do not vouch for the broker: refused, not trusted.
    unverified = KafkaSecurity.from_env({"MIRRORSCOPE_KAFKA_SECURITY": "SSL"})
    with pytest.raises(KafkaError):
        produce_kafka_python(broker.tls_bootstrap, topic, unverified.kafka_python(), b"nope")


def test_tokens_are_reused_until_two_minutes_before_expiry():
    now = [1000.0]
    made = []

    def gen(region):
        made.append(region)
        return f"token-{len(made)}", (now[0] + 900) * 1000

    t = MskIamToken("eu-west-1", generate=gen, clock=lambda: now[0])
    assert t.get() == "token-1" and t.get() == "token-1"
    now[0] += 900 - 121
    assert t.get() == "token-1"
    now[0] += 2
    assert t.get() == "token-2" and made == ["eu-west-1", "eu-west-1"]


@pytest.mark.parametrize("env, why", [
    ({"MIRRORSCOPE_KAFKA_SECURITY": "SASL_SSL"}, "MECHANISM"),
    ({"MIRRORSCOPE_KAFKA_SECURITY": "SASL_SSL", "MIRRORSCOPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"},
     "USERNAME"),
    ({"MIRRORSCOPE_KAFKA_SECURITY": "SASL_SSL", "MIRRORSCOPE_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM"},
     "region"),
    ({"MIRRORSCOPE_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM", "AWS_REGION": "us-east-1"}, "SASL_SSL"),
    ({"MIRRORSCOPE_KAFKA_SECURITY": "TLS"}, "PLAINTEXT"),
])
def test_unusable_settings_are_named(env, why):
    with pytest.raises(KafkaAuthError, match=why):
        KafkaSecurity.from_env(env)
