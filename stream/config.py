"""Faust options from :class:`~mindstream.settings.Settings` (broker, security, store, profile).

The ``local`` broker profile's quirks (one record per producer batch so that changelog recovery
is exact on Tansu, short session timeouts) come from ``settings.profile`` and apply only when
``MINDSTREAM_KAFKA_PROFILE=local``; ``standard`` leaves Faust's defaults for Apache Kafka. The
profile's fetch wait is not a Faust option: ``stream.faust_internals`` sets it when the worker
starts.
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


def processing_guarantee(settings: Settings) -> str:
    """Faust's ``processing_guarantee`` for ``MINDSTREAM_PROCESSING_GUARANTEE``; ConfigError for
    ``exactly_once``, which this worker cannot honour (RELIABILITY.md, "Processing guarantee").

    Faust's exactly-once puts a source partition's offset commit, and what Faust produces for
    that partition, into one Kafka transaction. Switched on, it would leave out what matters
    here: the worker writes its window changelog and re-keyed clicks with its own producer
    (``stream.batchwriter``), outside any transaction; Faust's transaction manager picks a
    transaction by the *destination* partition and finds none for the dead-letter topic, so
    dead letters go out without one too; and Faust commits on its timer, not at the worker's
    batch boundaries. Measured with the refusal bypassed: offset commits transactional, no
    changelog or dead-letter record batch transactional, dead letters duplicated by SIGKILLs
    exactly as with at_least_once. Tansu (the ``local`` profile) has no working transactions.
    """
    wanted = settings.processing_guarantee
    if wanted != "exactly_once":
        return wanted
    broker = (
        "the local profile's broker (Tansu) has no working Kafka transactions, and "
        if settings.kafka_profile == "local"
        else ""
    )
    raise ConfigError(
        "MINDSTREAM_PROCESSING_GUARANTEE=exactly_once is not supported: "
        f"{broker}the worker writes its window changelog, re-keyed clicks and dead letters "
        "outside Faust's Kafka transactions, so exactly-once would not hold for them. Use "
        "at_least_once (the default): Redis records are still exact (a replayed event is "
        "skipped by the window and a stale rewrite refused by the record's monotonic seq), "
        "the changelog converges to the same windows, and a dead letter can be written twice "
        "after a crash (de-duplicate them by their mindstream.source header); see "
        'RELIABILITY.md, "Processing guarantee"'
    )


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
        "processing_guarantee": processing_guarantee(settings),
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
