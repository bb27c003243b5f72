"""Kafka client options from :class:`~mindstream.settings.Settings`, for every client we use.

Each function returns keyword arguments for one client constructor, combining the connection
and security settings with the broker profile's quirks, so no module builds a Kafka client
from the settings by hand. Callers add what is theirs (serialisers, offsets reset, ...).

One record per producer batch (the ``local`` profile's ``producer_max_batch_size=1``) maps to
kafka-python's ``batch_size=1`` and aiokafka's ``max_batch_size=1``: both clients always accept
the first record of a batch and refuse a second one that would exceed the size, so every batch
holds exactly one record whatever ``linger_ms`` is. Measured against Tansu (10,000 records in
rounds of 2,000): with it the broker's end offsets were exact after every round; without it they
stopped at the last batch's first offset + 1 (e.g. 801 for 1,000 records).
"""

from __future__ import annotations

from typing import Any

from mindstream.settings import Settings


def bootstrap_servers(settings: Settings) -> list[str]:
    """``KAFKA_BOOTSTRAP_SERVERS`` as a list of ``host:port`` strings."""
    return [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]


def _sasl(settings: Settings) -> dict[str, Any]:
    if not settings.kafka_security_protocol.startswith("SASL_"):
        return {}
    options: dict[str, Any] = {"sasl_mechanism": settings.kafka_sasl_mechanism}
    if settings.kafka_sasl_username:
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


def _connection(settings: Settings, client_id: str | None) -> dict[str, Any]:
    """Where and as whom to connect: option names both client libraries share."""
    return {
        "bootstrap_servers": bootstrap_servers(settings),
        "client_id": client_id or settings.app_id,
        "security_protocol": settings.kafka_security_protocol,
        **_sasl(settings),
    }


def _group(settings: Settings, group_id: str | None) -> dict[str, Any]:
    """A consumer's group and the profile's group timeouts (same names in both libraries)."""
    return {
        "group_id": group_id,
        "session_timeout_ms": settings.group_session_timeout_ms,
        "heartbeat_interval_ms": settings.group_heartbeat_interval_ms,
    }


def _batching(settings: Settings, size_option: str) -> dict[str, Any]:
    """A producer's idempotence and the profile's batch size, under this library's option name
    for the batch size (``size_option``).
    """
    options: dict[str, Any] = {"enable_idempotence": settings.profile.idempotent_producer}
    if settings.profile.producer_max_batch_size is not None:
        options[size_option] = settings.profile.producer_max_batch_size
    return options


def _uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in {"SSL", "SASL_SSL"}


# --- kafka-python --------------------------------------------------------------------------


def kafka_python_kwargs(settings: Settings, *, client_id: str | None = None) -> dict[str, Any]:
    """Options every kafka-python client accepts (``KafkaAdminClient`` takes only these)."""
    options = _connection(settings, client_id)
    if _uses_tls(settings) and settings.kafka_ssl_cafile:
        options["ssl_cafile"] = settings.kafka_ssl_cafile
    return options


def kafka_python_producer_kwargs(
    settings: Settings, *, client_id: str | None = None
) -> dict[str, Any]:
    """Options for ``kafka.KafkaProducer``, including the profile's batching and idempotence."""
    return {
        **kafka_python_kwargs(settings, client_id=client_id),
        **_batching(settings, "batch_size"),
    }


def kafka_python_consumer_kwargs(
    settings: Settings, *, group_id: str | None, client_id: str | None = None
) -> dict[str, Any]:
    """Options for ``kafka.KafkaConsumer``, including the profile's group timeouts."""
    return {**kafka_python_kwargs(settings, client_id=client_id), **_group(settings, group_id)}


# --- aiokafka ------------------------------------------------------------------------------


def aiokafka_kwargs(settings: Settings, *, client_id: str | None = None) -> dict[str, Any]:
    """Options every aiokafka client accepts (``AIOKafkaAdminClient`` takes only these)."""
    options = _connection(settings, client_id)
    if _uses_tls(settings):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile or None)
    return options


def aiokafka_producer_kwargs(settings: Settings, *, client_id: str | None = None) -> dict[str, Any]:
    """Options for ``aiokafka.AIOKafkaProducer``, including the profile's batching."""
    # aiokafka's idempotent producer fails against Tansu; the local profile turns it off.
    return {
        **aiokafka_kwargs(settings, client_id=client_id),
        **_batching(settings, "max_batch_size"),
    }


def aiokafka_consumer_kwargs(
    settings: Settings, *, group_id: str | None, client_id: str | None = None
) -> dict[str, Any]:
    """Options for ``aiokafka.AIOKafkaConsumer``, including the profile's group timeouts."""
    return {**aiokafka_kwargs(settings, client_id=client_id), **_group(settings, group_id)}
