"""Errors raised by the stream stage, one per boundary it guards."""

from __future__ import annotations

from mindstream.errors import MindstreamError


class StreamError(MindstreamError):
    """Base of the stream stage's errors."""


class BadEvent(StreamError):
    """A click event broke the contract; it is dead-lettered, never applied.

    ``reason`` is a short stable code (used as a metric label and in the dead-letter headers);
    ``detail`` says what was expected and what came.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RecordError(StreamError):
    """A Redis interest record cannot be decoded (wrong layout, truncated vectors, ...)."""


class RecordRefused(RecordError):
    """Redis answered a record read with an error (a key of another type, a refused command)."""


class TowerError(StreamError):
    """The user tower cannot be loaded or run with the given bundle."""


class StoreUnavailable(StreamError):
    """Redis could not be written or read after the allowed retries."""
