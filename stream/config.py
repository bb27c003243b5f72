"""Faust options from :class:`~mindstream.settings.Settings` (broker, security, store, profile).

The ``local`` broker profile's quirks (one record per producer batch so that changelog recovery
is exact on Tansu, short session timeouts) come from ``settings.profile`` and apply only when
``MINDSTREAM_KAFKA_PROFILE=local``; ``standard`` leaves Faust's defaults for Apache Kafka.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mindstream.errors import ConfigError
from mindstream.kafka_config import bootstrap_servers
from mindstream.settings import Settings


def table_store(settings: Settings) -> str:
    store = settings.table_store
    if store.startswith("rocksdb://"):
        if importlib.util.find_spec("rocksdict") is None:
            raise ConfigError(
                f"MINDSTREAM_TABLE_STORE={store} requires rocksdict: pip install rocksdict"
            )
    elif not store.startswith("memory://"):
        raise ConfigError(f"MINDSTREAM_TABLE_STORE={store!r}: expected memory:// or rocksdb://")
    return store


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for the Kafka security settings (None for PLAINTEXT)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if protocol in {"SSL", "SASL_SSL"}:
        from aiokafka.helpers import create_ssl_context

        ssl_context = create_ssl_context(cafile=settings.kafka_ssl_cafile or None)
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    if protocol in {"SASL_PLAINTEXT", "SASL_SSL"}:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            ssl_context=ssl_context,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        )
    raise ConfigError(f"MINDSTREAM_KAFKA_SECURITY_PROTOCOL={protocol!r} is not supported")


def app_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``faust.App`` for these settings."""
    profile = settings.profile
    datadir = Path(settings.data_dir) / "stream" / settings.app_id
    # Faust creates only the last folder of its datadir.
    datadir.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "broker": [f"kafka://{server}" for server in bootstrap_servers(settings)],
        "broker_credentials": broker_credentials(settings),
        "store": table_store(settings),
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication_factor,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "datadir": str(datadir),
        "web_enabled": True,
        "web_port": settings.worker_web_port,
        # Faust's default is 0.0.0.0; health and metrics stay on loopback unless told otherwise.
        "web_bind": settings.worker_web_host,
        "web_host": settings.worker_web_host,
        "consumer_auto_offset_reset": "earliest",
        "processing_guarantee": "at_least_once",
        "broker_session_timeout": settings.group_session_timeout_ms / 1000,
        "broker_heartbeat_interval": settings.group_heartbeat_interval_ms / 1000,
        # Changelog records (one per dirty user per batch) are the bulk of what the worker
        # produces; lingering lets one request carry many of them.
        "producer_linger": settings.stream_producer_linger_ms / 1000,
        # One fetch at most one batch: the worker's intake holds the records fetched until
        # processed, and a rebalance waits for them (stream.intake).
        "broker_max_poll_records": settings.batch_size,
        "autodiscover": False,
        "origin": "stream.app",
    }
    if profile.producer_max_batch_size is not None:
        options["producer_max_batch_size"] = profile.producer_max_batch_size
    return options


def set_consumer_fetch_max_wait(ms: int | None) -> None:
    """Make Faust's worker consumer wait at most ``ms`` per fetch (None: leave Faust's 1.5 s).

    Faust 0.15 hard-codes ``fetch_max_wait_ms=1500`` when it builds its aiokafka consumer; the
    ``local`` profile needs less (see ``KafkaProfile.consumer_fetch_max_wait_ms``). aiokafka
    reads the value when the consumer starts, after Faust built it, so it is set in between.
    """
    if ms is None:
        return
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    original = getattr(thread, "_mindstream_original_create", thread._create_worker_consumer)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    thread._mindstream_original_create = original  # type: ignore[attr-defined]
    thread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
