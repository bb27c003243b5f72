"""Checks before the worker starts: a broker answers (waiting a bounded time for one), topics
exist with matching partitions, the bundle verifies."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from mindstream.errors import ConfigError
from mindstream.kafka_config import kafka_python_kwargs
from mindstream.settings import Settings
from mindstream.topics import ensure_topics, existing_partitions
from model_export.bundle import load_bundle
from stream.exceptions import StreamError
from stream.rekey import changelog_topic_name, rekey_topic_name

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


def check_partitions(
    expected: int, clicks_topic: str, found: Mapping[str, int], derived: Sequence[str]
) -> None:
    """Refuse partition counts the worker cannot run with (ConfigError naming the setting).

    A user's events, re-keyed events and window live on partition ``hash(user) % n`` of the
    clicks topic, the re-key topic and the window changelog (``stream.rekey``), so all three
    must have ``MINDSTREAM_TOPIC_PARTITIONS`` partitions. ``found`` holds the partition
    counts of the topics that exist; ``derived`` names the re-key and changelog topics.
    """
    clicks = found.get(clicks_topic)
    if clicks is not None and clicks != expected:
        raise ConfigError(
            f"topic {clicks_topic} (MINDSTREAM_CLICKS_TOPIC) has {clicks} partitions but "
            f"MINDSTREAM_TOPIC_PARTITIONS={expected}: the worker keeps each user's window on "
            f"partition hash(user) % {expected} of the clicks topic, the re-key topic and the "
            f"window changelog, so they must all have the same count; set "
            f"MINDSTREAM_TOPIC_PARTITIONS={clicks}"
        )
    wrong = {name: found[name] for name in derived if name in found and found[name] != expected}
    if wrong:
        listed = ", ".join(f"{name} has {count}" for name, count in sorted(wrong.items()))
        raise ConfigError(
            f"{listed} partitions but the clicks topic {clicks_topic} and "
            f"MINDSTREAM_TOPIC_PARTITIONS have {expected}: these topics were made for another "
            "partition count, and a user's window would be looked up on the wrong partition; "
            "use a new MINDSTREAM_APP_ID (its own re-key topic and changelog, windows rebuilt "
            "from the clicks topic), or delete them together with the consumer group "
            "MINDSTREAM_APP_ID names (its committed offsets), so that the windows are rebuilt"
        )


def preflight(settings: Settings) -> None:
    """Wait for a broker, create the worker's topics if missing and refuse partition counts
    that cannot work."""
    bundle = load_bundle(settings.bundle_path)
    wait_for_broker(settings)
    rekey = rekey_topic_name(settings.app_id, settings.clicks_topic)
    changelog = changelog_topic_name(settings.app_id)
    n = settings.topic_partitions
    # Checked before anything is created: a topic made here with n partitions next to a clicks
    # topic of another count would stay behind after the refusal.
    found = existing_partitions(settings, [settings.clicks_topic, rekey, changelog])
    check_partitions(n, settings.clicks_topic, found, [rekey, changelog])
    outcomes = ensure_topics(settings, {settings.clicks_topic: n, rekey: n, settings.dlq_topic: n})
    # created by another process between the look and the creation
    check_partitions(
        n, settings.clicks_topic, {o.name: o.partitions for o in outcomes}, [rekey, changelog]
    )
    logger.info(
        "preflight ok clicks=%s partitions=%d dlq=%s rekey=%s bundle=%s",
        settings.clicks_topic,
        n,
        settings.dlq_topic,
        rekey,
        bundle.version,
    )
