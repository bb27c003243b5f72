"""Kafka client options: the profile's quirks and the security settings reach every client."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import ssl
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

from mindstream import kafka_config
from mindstream.errors import ConfigError
from mindstream.settings import Settings

LOCAL = Settings(kafka_profile="local", kafka_bootstrap_servers="a:1, b:2")
STANDARD = Settings()
SASL_SSL = Settings(
    kafka_security_protocol="SASL_SSL",
    kafka_sasl_mechanism="SCRAM-SHA-512",
    kafka_sasl_username="svc",
    kafka_sasl_password="secret",
    kafka_ssl_cafile="/etc/ssl/certs/ca-certificates.crt",
)


def _accepted(client: type) -> set[str]:
    if hasattr(client, "DEFAULT_CONFIG"):
        return set(client.DEFAULT_CONFIG)
    return set(inspect.signature(client).parameters) - {"loop", "topics"}


@pytest.mark.parametrize("settings", [LOCAL, STANDARD, SASL_SSL], ids=["local", "std", "sasl"])
def test_every_option_is_one_the_client_accepts(settings: Settings) -> None:
    pairs = [
        (kafka_config.kafka_python_kwargs(settings), KafkaAdminClient),
        (kafka_config.kafka_python_producer_kwargs(settings), KafkaProducer),
        (kafka_config.kafka_python_consumer_kwargs(settings, group_id="g"), KafkaConsumer),
        (kafka_config.aiokafka_kwargs(settings), AIOKafkaAdminClient),
        (kafka_config.aiokafka_producer_kwargs(settings), AIOKafkaProducer),
        (kafka_config.aiokafka_consumer_kwargs(settings, group_id="g"), AIOKafkaConsumer),
    ]
    for options, client in pairs:
        assert set(options) <= _accepted(client), client


def test_local_profile_makes_one_record_per_batch_and_short_group_timeouts() -> None:
    producer = kafka_config.kafka_python_producer_kwargs(LOCAL)
    assert producer["batch_size"] == 1
    assert producer["enable_idempotence"] is False
    assert kafka_config.aiokafka_producer_kwargs(LOCAL)["max_batch_size"] == 1
    consumer = kafka_config.kafka_python_consumer_kwargs(LOCAL, group_id="g")
    assert consumer["session_timeout_ms"] == LOCAL.profile.session_timeout_ms <= 6_000
    assert consumer["heartbeat_interval_ms"] < consumer["session_timeout_ms"]
    assert consumer["bootstrap_servers"] == ["a:1", "b:2"]


def test_standard_profile_keeps_the_clients_defaults_for_batching() -> None:
    assert "batch_size" not in kafka_config.kafka_python_producer_kwargs(STANDARD)
    assert "max_batch_size" not in kafka_config.aiokafka_producer_kwargs(STANDARD)
    assert kafka_config.aiokafka_producer_kwargs(STANDARD)["enable_idempotence"] is True
    options = kafka_config.kafka_python_kwargs(STANDARD, client_id="me")
    assert options == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "client_id": "me",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_settings_reach_both_clients() -> None:
    options = kafka_config.kafka_python_consumer_kwargs(SASL_SSL, group_id="g")
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "svc"
    assert options["sasl_plain_password"] == "secret"
    assert options["ssl_cafile"] == "/etc/ssl/certs/ca-certificates.crt"
    aio = kafka_config.aiokafka_producer_kwargs(SASL_SSL)
    assert aio["sasl_mechanism"] == "SCRAM-SHA-512" and aio["sasl_plain_username"] == "svc"
    assert isinstance(aio["ssl_context"], ssl.SSLContext)


def test_plaintext_sends_no_sasl_or_tls_options() -> None:
    sasl_fields = dataclasses.replace(
        STANDARD, kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u", kafka_ssl_cafile="/x"
    )
    options = kafka_config.kafka_python_kwargs(sasl_fields)
    assert not {k for k in options if k.startswith(("sasl", "ssl"))}
    assert "ssl_context" not in kafka_config.aiokafka_kwargs(sasl_fields)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MINDSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "MINDSTREAM_KAFKA_SECURITY_PROTOCOL"),
        ({"MINDSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "MINDSTREAM_KAFKA_SASL_MECHANISM"),
        (
            {
                "MINDSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "MINDSTREAM_KAFKA_SASL_MECHANISM": "PLAIN",
            },
            "MINDSTREAM_KAFKA_SASL_USERNAME",
        ),
    ],
)
def test_inconsistent_security_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.integration
async def test_aiokafka_options_work_and_keep_end_offsets_exact(
    service_settings: Settings, unique_topic: Callable[..., str]
) -> None:
    """Bursts that aiokafka would batch: the broker must still count every record (on Tansu
    only one record per batch does that, which the local profile's options give)."""
    topic = unique_topic("aio", partitions=1)
    producer = AIOKafkaProducer(**kafka_config.aiokafka_producer_kwargs(service_settings))
    await producer.start()
    try:
        for burst in range(3):
            sent = [await producer.send(topic, b"%d" % i, key=b"k") for i in range(100)]
            await asyncio.gather(*sent)
            await producer.flush()
            consumer = AIOKafkaConsumer(
                **kafka_config.aiokafka_consumer_kwargs(service_settings, group_id=None)
            )
            await consumer.start()
            try:
                tp = TopicPartition(topic, 0)
                assert (await consumer.end_offsets([tp]))[tp] == 100 * (burst + 1)
            finally:
                await consumer.stop()
    finally:
        await producer.stop()


def test_session_timeout_setting_overrides_the_profile_for_every_consumer() -> None:
    from stream.config import app_options

    default = Settings()
    assert (
        kafka_config.kafka_python_consumer_kwargs(default, group_id="g")["session_timeout_ms"]
        == 30_000
    )
    tuned = dataclasses.replace(Settings(), kafka_session_timeout_ms=6_000)
    for options in (
        kafka_config.kafka_python_consumer_kwargs(tuned, group_id="g"),
        kafka_config.aiokafka_consumer_kwargs(tuned, group_id="g"),
    ):
        assert options["session_timeout_ms"] == 6_000
        assert options["heartbeat_interval_ms"] == 2_000  # at most a third of the session
    faust = app_options(tuned)
    assert faust["broker_session_timeout"] == 6.0
    assert faust["broker_heartbeat_interval"] == 2.0
