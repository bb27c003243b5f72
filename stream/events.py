"""The click-event contract: what producers put on the clicks topic and how the worker checks it.

A click event is one Kafka record::

    key    the user id as UTF-8 (the partitioning key), or no key at all (null)
    value  a UTF-8 JSON object, at most MAX_EVENT_BYTES bytes:
           {"user_id": "u42", "item_id": "i9001", "ts": 1700000000123, "event": "click"}

Fields:

``user_id``, ``item_id`` (required)
    non-empty strings of at most ``MAX_ID_CHARS`` characters, no control characters, no line or
    paragraph separators, no surrogates, no leading or trailing whitespace (``"u42 "`` and
    ``"u42"`` would otherwise be two users).
``ts`` (required)
    event time, integer epoch milliseconds, not before 2000-01-01 and not more than
    ``max_future_skew_ms`` after the worker's clock. Floats, strings and booleans are rejected.
``event`` (optional, default ``"click"``)
    one of ``EVENT_TYPES``.
``category`` (optional)
    a string with the same rules as the ids (a producer category id or name).

Any other field, a repeated field, NaN/Infinity, a BOM or any non-UTF-8 byte make the event
bad: unknown fields are rejected rather than ignored, because a typo (``"evnt"``) would
otherwise silently change the meaning of an event.

Key rules: a key, when present, must be exactly the UTF-8 bytes of ``user_id``; an empty key
(zero bytes) is bad. A record with no key (null) is valid: the worker re-keys it by user id
(see ``stream.agents``), so that a user's events and window live on one partition.

Every rejection raises :class:`BadEvent` with a stable ``reason`` code from ``REASONS`` and is
dead-lettered by the worker (see ``stream.deadletter``). ``decode_event`` raises nothing else,
whatever the bytes (fuzzed in the tests).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from stream.exceptions import BadEvent

MAX_EVENT_BYTES = 4096
MAX_ID_CHARS = 128
# 2000-01-01T00:00:00Z: older timestamps are a unit mistake (seconds for ms) or garbage.
MIN_TS_MS = 946_684_800_000
DEFAULT_MAX_FUTURE_SKEW_MS = 300_000
EVENT_TYPES = frozenset({"click", "pv", "view", "cart", "fav", "buy"})
DEFAULT_EVENT_TYPE = "click"
REQUIRED_FIELDS = ("user_id", "item_id", "ts")
OPTIONAL_FIELDS = ("event", "category")
KNOWN_FIELDS = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)

# Stable reason codes: metric labels and the dead-letter ``mindstream.reason`` header.
REASONS = (
    "null_value",
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "duplicate_field",
    "unknown_field",
    "missing_field",
    "wrong_type",
    "bad_id",
    "ts_out_of_range",
    "unknown_event",
    "empty_key",
    "key_mismatch",
    # a record on the re-key topic without a valid origin header (not forwarded by a worker)
    "bad_origin",
)

# C0/C1 controls, U+2028/2029 (str.splitlines() splits on them, and bundles store item ids one
# per line), lone surrogates (not encodable as UTF-8; JSON "\ud800" escapes produce them).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ClickEvent:
    """A validated click event (the record's value; the key is checked against ``user_id``)."""

    user_id: str
    item_id: str
    ts: int
    event: str = DEFAULT_EVENT_TYPE
    category: str | None = None


class _DuplicateField(ValueError):
    pass


class _BadConstant(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateField(name)
            seen.add(name)
    return obj


def _constant(name: str) -> Any:
    raise _BadConstant(name)


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)


def _check_text(field: str, value: Any) -> str:
    if type(value) is not str:
        raise BadEvent("wrong_type", f"{field} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_CHARS:
        raise BadEvent(
            "bad_id", f"{field} must have 1..{MAX_ID_CHARS} characters, got {len(value)}"
        )
    if _FORBIDDEN.search(value) or value.strip() != value:
        raise BadEvent(
            "bad_id",
            f"{field} {value[:40]!r} has control characters, separators, surrogates or "
            "leading/trailing whitespace",
        )
    return value


def decode_event(
    key: bytes | None,
    value: bytes | None,
    *,
    now_ms: int | None = None,
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
) -> ClickEvent:
    """Validate one record of the clicks topic; raise :class:`BadEvent` when it breaks the contract.

    ``now_ms`` (default: the wall clock) bounds ``ts`` from above with ``max_future_skew_ms``.
    """
    if value is None:
        raise BadEvent("null_value", "no value (a tombstone); expected a JSON object")
    if len(value) > MAX_EVENT_BYTES:
        raise BadEvent("too_large", f"{len(value)} bytes, at most {MAX_EVENT_BYTES} allowed")
    if key is not None and len(key) == 0:
        raise BadEvent("empty_key", "the key is empty; send the user id as key, or no key at all")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadEvent("not_utf8", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = _DECODER.decode(text)
    except _DuplicateField as exc:
        raise BadEvent("duplicate_field", f"field {str(exc)!r} appears more than once") from None
    except _BadConstant as exc:
        raise BadEvent("not_json", f"{exc} is not valid JSON") from None
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError is a ValueError; so are oversized integer literals.
        raise BadEvent("not_json", f"value is not JSON ({str(exc)[:120]})") from None
    if type(obj) is not dict:
        raise BadEvent("not_object", f"expected a JSON object, got {type(obj).__name__}")
    if not KNOWN_FIELDS.issuperset(obj):
        unknown = sorted(set(obj) - KNOWN_FIELDS)
        raise BadEvent(
            "unknown_field", f"unknown fields {unknown[:5]}; allowed {sorted(KNOWN_FIELDS)}"
        )
    for name in REQUIRED_FIELDS:
        if name not in obj:
            raise BadEvent("missing_field", f"{name!r} is required (fields: {sorted(obj)})")

    user_id = _check_text("user_id", obj["user_id"])
    item_id = _check_text("item_id", obj["item_id"])
    ts = obj["ts"]
    if type(ts) is not int:
        raise BadEvent("wrong_type", f"ts must be integer epoch ms, got {type(ts).__name__}")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if ts < MIN_TS_MS or ts > now + max_future_skew_ms:
        raise BadEvent(
            "ts_out_of_range",
            f"ts={ts} is outside [{MIN_TS_MS} (2000-01-01), now+{max_future_skew_ms} ms = "
            f"{now + max_future_skew_ms}]; epoch milliseconds expected",
        )
    kind = obj.get("event", DEFAULT_EVENT_TYPE)
    if type(kind) is not str:
        raise BadEvent("wrong_type", f"event must be a string, got {type(kind).__name__}")
    if kind not in EVENT_TYPES:
        raise BadEvent("unknown_event", f"event {kind[:40]!r} is not one of {sorted(EVENT_TYPES)}")
    category = obj.get("category")
    if category is not None:
        category = _check_text("category", category)
    if key is not None and key != user_id.encode("utf-8"):
        raise BadEvent(
            "key_mismatch",
            f"key {key[:40]!r} is not the UTF-8 user id {user_id[:40]!r}; "
            "key by user id or not at all",
        )
    return ClickEvent(user_id, item_id, ts, kind, category)


def encode_event(
    user_id: str,
    item_id: str,
    ts: int,
    *,
    event: str | None = None,
    category: str | None = None,
    now_ms: int | None = None,
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
) -> bytes:
    """The record value for one click; raises :class:`BadEvent` if the worker would reject it."""
    obj: dict[str, Any] = {"user_id": user_id, "item_id": item_id, "ts": ts}
    if event is not None:
        obj["event"] = event
    if category is not None:
        obj["category"] = category
    value = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    decode_event(None, value, now_ms=now_ms, max_future_skew_ms=max_future_skew_ms)
    return value


def event_key(user_id: str) -> bytes:
    """The record key for a user's events: the user id as UTF-8."""
    return user_id.encode("utf-8")
