"""Checks before the worker starts: a broker answers (waiting a bounded time for one), topics
exist with matching partitions, the bundle verifies."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mindstream.errors import ConfigError
from mindstream.kafka_config import kafka_python_kwargs
from mindstream.settings import Settings
from mindstream.topics import ensure_topics
from model_export.bundle import load_bundle
from stream.exceptions import StreamError
from stream.rekey import rekey_topic_name

logger = logging.getLogger(__name__)

BROKER_PROBE_TIMEOUT_S = 5.0
BROKER_RETRY_S = 2.0


class BrokerUnavailable(StreamError):
    """No Kafka broker answered within ``MINDSTREAM_STREAM_BROKER_WAIT_S``."""


def broker_answers(settings: Settings, timeout_s: float = BROKER_PROBE_TIMEOUT_S) -> str | None:
    """None when a broker of the settings answers a metadata request, else why not."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(timeout_s * 1000)
    # kafka-python logs every refused connection (ERROR, several lines per try); the one
    # warning per try in wait_for_broker says it all.
    kafka_logger = logging.getLogger("kafka")
    level = kafka_logger.level
    kafka_logger.setLevel(logging.CRITICAL)
    try:
        admin = KafkaAdminClient(
            **kafka_python_kwargs(settings, client_id=f"{settings.app_id}-preflight"),
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except (KafkaError, OSError) as exc:
        return repr(exc)
    finally:
        kafka_logger.setLevel(level)
    admin.close()
    return None


def wait_for_broker(
    settings: Settings,
    *,
    probe: Callable[[Settings, float], str | None] = broker_answers,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once a broker answers; retry for ``stream_broker_wait_s``, then raise
    BrokerUnavailable (one warning per failed try, no stack traces)."""
    limit = settings.stream_broker_wait_s
    deadline = clock() + limit
    attempt = 0
    while True:
        attempt += 1
        # a try never runs much past the limit
        problem = probe(settings, max(0.5, min(BROKER_PROBE_TIMEOUT_S, deadline - clock())))
        if problem is None:
            if attempt > 1:
                logger.info("kafka broker answers after attempt=%d", attempt)
            return
        left = deadline - clock()
        if left <= 0:
            raise BrokerUnavailable(
                f"no Kafka broker answered at {settings.kafka_bootstrap_servers} "
                f"(KAFKA_BOOTSTRAP_SERVERS) within {limit:.0f} s "
                f"(MINDSTREAM_STREAM_BROKER_WAIT_S); last error: {problem}"
            )
        logger.warning(
            "no kafka broker answers bootstrap=%s attempt=%d error=%s; retrying for %.0f s more",
            settings.kafka_bootstrap_servers,
            attempt,
            problem,
            left,
        )
        sleep(min(BROKER_RETRY_S, left))


def preflight(settings: Settings) -> None:
    """Wait for a broker, create the worker's topics if missing and refuse partition counts
    that cannot work."""
    bundle = load_bundle(settings.bundle_path)
    wait_for_broker(settings)
    rekey = rekey_topic_name(settings.app_id, settings.clicks_topic)
    n = settings.topic_partitions
    outcomes = ensure_topics(settings, {settings.clicks_topic: n, rekey: n, settings.dlq_topic: n})
    have = {o.name: o.partitions for o in outcomes}
    for name in (settings.clicks_topic, rekey):
        if have[name] != n:
            raise ConfigError(
                f"topic {name} has {have[name]} partitions but MINDSTREAM_TOPIC_PARTITIONS={n}; "
                "the window changelog and re-key topic must match the clicks topic: set "
                f"MINDSTREAM_TOPIC_PARTITIONS={have[settings.clicks_topic]}"
            )
    logger.info(
        "preflight ok clicks=%s partitions=%d dlq=%s rekey=%s bundle=%s",
        settings.clicks_topic,
        n,
        settings.dlq_topic,
        rekey,
        bundle.version,
    )
