"""Re-keying: where a user's events must be processed, and the origin carried by forwarded events.

A user's window lives on partition ``murmur2(utf8(user_id)) % n`` (the Java client's default
partitioner, also kafka-python's and aiokafka's) of the clicks topic, its re-key topic and the
window changelog, which all have ``n`` partitions. A valid click that arrives without a key, or
on another partition (a producer with another partitioner), is forwarded to that partition of
the re-key topic (``<app id>-<clicks topic>-rekey``) with the same value and these headers::

    mindstream.origin     "<topic>/<partition>/<offset>" where it was first published
    mindstream.origin_ts  that record's Kafka timestamp, epoch milliseconds

The window de-duplicates by the origin position (re-keyed events form their own channel per
origin partition, see ``stream.processor.source_id``), so a crash that forwards an event twice,
or a replay of either topic, applies it once.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from aiokafka.partitioner import murmur2

from stream.exceptions import StreamError

H_ORIGIN = "mindstream.origin"
H_ORIGIN_TS = "mindstream.origin_ts"


# The window table's name; Faust names its changelog ``<app id>-<table>-changelog``.
WINDOW_TABLE = "windows"


def rekey_topic_name(app_id: str, clicks_topic: str) -> str:
    return f"{app_id}-{clicks_topic}-rekey"


def changelog_topic_name(app_id: str) -> str:
    """The window table's changelog topic."""
    return f"{app_id}-{WINDOW_TABLE}-changelog"


@lru_cache(maxsize=1 << 16)
def user_partition(key: bytes, n_partitions: int) -> int:
    """The partition of a user's events and window (Kafka's default partitioner)."""
    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


def origin_headers(
    topic: str, partition: int, offset: int, timestamp_ms: int
) -> list[tuple[str, bytes]]:
    return [
        (H_ORIGIN, f"{topic}/{partition}/{offset}".encode()),
        (H_ORIGIN_TS, str(timestamp_ms).encode()),
    ]


def parse_origin(headers: Iterable[tuple[str, bytes]] | None) -> tuple[str, int, int, int]:
    """(topic, partition, offset, timestamp_ms) of a forwarded event; StreamError if absent."""
    found: dict[str, bytes] = {}
    for name, value in headers or ():
        if name in (H_ORIGIN, H_ORIGIN_TS):
            found[name] = bytes(value)
    try:
        topic, partition, offset = found[H_ORIGIN].decode().rsplit("/", 2)
        return topic, int(partition), int(offset), int(found.get(H_ORIGIN_TS, b"0"))
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise StreamError(f"re-keyed record without a valid {H_ORIGIN} header ({exc!r})") from None
