"""Create topics with a given number of partitions, idempotently, on any Kafka-protocol broker."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mindstream.errors import MindstreamError
from mindstream.kafka_config import kafka_python_kwargs
from mindstream.settings import Settings

logger = logging.getLogger(__name__)


class TopicError(MindstreamError):
    """A topic could not be created or does not have the expected shape."""


# Let the broker pick (default.replication.factor): 1 locally, the cluster's policy elsewhere.
BROKER_DEFAULT_REPLICATION = -1
_LEGAL_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    partitions: int
    created: bool  # False when it existed already


def check_topic_name(name: str) -> str:
    """``name`` when Kafka accepts it as a topic name; TopicError otherwise."""
    if not _LEGAL_NAME.fullmatch(name) or name in {".", ".."}:
        raise TopicError(
            f"topic name {name!r}: expected 1-249 characters from a-z A-Z 0-9 . _ - "
            f"(and not '.' or '..')"
        )
    return name


def _admin(settings: Settings, timeout_s: float) -> Any:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(timeout_s * 1000)
    try:
        return KafkaAdminClient(
            **kafka_python_kwargs(settings, client_id=f"{settings.app_id}-admin"),
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except KafkaError as exc:
        raise TopicError(
            f"cannot reach the Kafka brokers at {settings.kafka_bootstrap_servers} "
            f"(KAFKA_BOOTSTRAP_SERVERS): {exc}"
        ) from exc


DESCRIBE_RETRY_S = 0.1


def partition_counts(topics: Iterable[Mapping[str, Any]]) -> dict[str, int | None]:
    """``name -> partitions`` from a metadata answer; None where the answering broker does
    not know the topic fully yet (an error code, or no partitions listed).

    A KRaft cluster's brokers learn of a new topic one by one: a metadata request sent to
    another broker just after the creation can answer "unknown topic" or an empty partition
    list, which is not a partition count.
    """
    counts: dict[str, int | None] = {}
    for topic in topics:
        partitions = topic.get("partitions") or []
        ok = topic.get("error_code", 0) == 0 and bool(partitions)
        counts[topic["name"]] = len(partitions) if ok else None
    return counts


def _describe_partitions(admin: Any, names: list[str], timeout_s: float) -> dict[str, int]:
    """Partition counts of existing topics ``names``, asked again until every broker answer
    is complete (TopicError after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = partition_counts(admin.describe_topics(names))
        unknown = sorted(name for name in names if counts.get(name) is None)
        if not unknown:
            return {name: count for name, count in counts.items() if count is not None}
        if time.monotonic() >= deadline:
            raise TopicError(
                f"the brokers did not report the partitions of {unknown} within {timeout_s:.0f} s"
            )
        time.sleep(DESCRIBE_RETRY_S)


def ensure_topics(
    settings: Settings,
    partitions: Mapping[str, int],
    *,
    replication_factor: int = BROKER_DEFAULT_REPLICATION,
    timeout_s: float = 30.0,
) -> list[TopicOutcome]:
    """Create each topic ``name -> partitions`` that does not exist yet, and wait until usable.

    A topic that exists already is left as it is, even with another partition count (logged
    as a warning: a topic's partitions decide which worker owns a user, so they are changed on
    purpose only).
    """
    from kafka.errors import KafkaError, NoError, TopicAlreadyExistsError

    for name, count in partitions.items():
        check_topic_name(name)
        if count < 1:
            raise TopicError(f"topic {name!r}: {count} partitions, expected at least 1")
    if not partitions:
        return []
    admin = _admin(settings, timeout_s)
    try:
        request = {
            name: {"num_partitions": count, "replication_factor": replication_factor}
            for name, count in partitions.items()
        }
        response = admin.create_topics(
            request, timeout_ms=int(timeout_s * 1000), raise_errors=False
        )
        created = set()
        for topic in response["topics"]:
            code = topic["error_code"]
            if code == NoError.errno:
                created.add(topic["name"])
            elif code != TopicAlreadyExistsError.errno:
                raise TopicError(
                    f"creating topic {topic['name']!r} failed: error {code} "
                    f"{topic.get('error_message') or ''}".rstrip()
                )
        admin.wait_for_topics(list(partitions), timeout_ms=int(timeout_s * 1000))
        # wait_for_topics asked one broker; the next request may go to another one
        actual = _describe_partitions(admin, list(partitions), timeout_s)
    except KafkaError as exc:
        raise TopicError(f"creating topics {sorted(partitions)} failed: {exc}") from exc
    finally:
        admin.close()
    outcomes = []
    for name, wanted in partitions.items():
        have = actual.get(name, 0)
        if name in created:
            logger.info("created topic=%s partitions=%d", name, have)
        elif have != wanted:
            logger.warning("topic=%s exists with partitions=%d (asked for %d)", name, have, wanted)
        outcomes.append(TopicOutcome(name, have, name in created))
    return outcomes


def ensure_topic(settings: Settings, name: str, partitions: int, **options: Any) -> TopicOutcome:
    """:func:`ensure_topics` for one topic."""
    return ensure_topics(settings, {name: partitions}, **options)[0]


def existing_partitions(
    settings: Settings, names: Iterable[str], *, timeout_s: float = 10.0
) -> dict[str, int]:
    """``name -> partitions`` of those of ``names`` that exist (the others are left out)."""
    from kafka.errors import KafkaError

    admin = _admin(settings, timeout_s)
    try:
        present = sorted(set(names) & set(admin.list_topics()))
        if not present:
            return {}
        return _describe_partitions(admin, present, timeout_s)
    except KafkaError as exc:
        raise TopicError(f"describing topics {sorted(set(names))} failed: {exc}") from exc
    finally:
        admin.close()


def delete_topics(settings: Settings, names: Iterable[str], *, timeout_s: float = 10.0) -> None:
    """Delete topics; those that do not exist are ignored."""
    from kafka.errors import KafkaError

    names = list(names)
    if not names:
        return
    admin = _admin(settings, timeout_s)
    try:
        admin.delete_topics(names, timeout_ms=int(timeout_s * 1000), raise_errors=False)
    except KafkaError as exc:
        raise TopicError(f"deleting topics {names} failed: {exc}") from exc
    finally:
        admin.close()
