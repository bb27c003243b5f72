"""The dead-letter record: a bad click event, byte for byte, plus why and where it came from.

A record on the dead-letter topic (``MINDSTREAM_DLQ_TOPIC``, default ``clicks.dlq``) has

- key: the original record's key, unchanged (absent when the original had none);
- value: the original record's value, unchanged, byte for byte (absent for a tombstone);
- headers: the original record's headers, followed by these (values UTF-8)::

    mindstream.format               "dlq/1"
    mindstream.reason               a reason code from ``stream.events.REASONS``
    mindstream.detail               what was expected and what came (at most 1000 characters)
    mindstream.source               "<topic>/<partition>/<offset>" of the original record
    mindstream.source_timestamp_ms  the original record's Kafka timestamp (epoch ms)

Topic names cannot contain ``/``, so ``source`` splits unambiguously from the right. The worker
produces dead letters at least once: after a crash a bad event can appear twice, with the same
``mindstream.source``, which identifies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from stream.exceptions import StreamError

FORMAT = "dlq/1"
H_FORMAT = "mindstream.format"
H_REASON = "mindstream.reason"
H_DETAIL = "mindstream.detail"
H_SOURCE = "mindstream.source"
H_TIMESTAMP = "mindstream.source_timestamp_ms"
OWN_HEADERS = frozenset({H_FORMAT, H_REASON, H_DETAIL, H_SOURCE, H_TIMESTAMP})
MAX_DETAIL_CHARS = 1000

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered event: the original bytes and the reason it was rejected."""

    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp_ms: int
    original_headers: tuple[tuple[str, bytes], ...] = field(default=())

    @property
    def source(self) -> str:
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"

    def headers(self) -> list[tuple[str, bytes]]:
        """The headers to produce the dead letter with (original ones first)."""
        return [
            *self.original_headers,
            (H_FORMAT, FORMAT.encode()),
            (H_REASON, self.reason.encode()),
            (H_DETAIL, self.detail[:MAX_DETAIL_CHARS].encode("utf-8", "replace")),
            (H_SOURCE, self.source.encode()),
            (H_TIMESTAMP, str(self.source_timestamp_ms).encode()),
        ]


def parse_dead_letter(key: bytes | None, value: bytes | None, headers: Headers) -> DeadLetter:
    """Read a record of the dead-letter topic back; raise StreamError if it is not one."""
    own: dict[str, str] = {}
    original: list[tuple[str, bytes]] = []
    for name, raw in headers or ():
        if name in OWN_HEADERS:
            own[name] = bytes(raw).decode("utf-8", "replace")
        else:
            original.append((name, bytes(raw)))
    if own.get(H_FORMAT) != FORMAT:
        raise StreamError(f"not a {FORMAT} dead letter: {H_FORMAT}={own.get(H_FORMAT)!r}")
    try:
        topic, partition, offset = own[H_SOURCE].rsplit("/", 2)
        return DeadLetter(
            key=key,
            value=value,
            reason=own[H_REASON],
            detail=own.get(H_DETAIL, ""),
            source_topic=topic,
            source_partition=int(partition),
            source_offset=int(offset),
            source_timestamp_ms=int(own.get(H_TIMESTAMP, "-1")),
            original_headers=tuple(original),
        )
    except (KeyError, ValueError) as exc:
        raise StreamError(f"malformed dead letter headers {sorted(own)}: {exc}") from None
