"""The click-event contract: malformed kinds are rejected with a reason, nothing else escapes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.malformed import malformed_records
from stream.events import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    MIN_TS_MS,
    REASONS,
    ClickEvent,
    decode_event,
    encode_event,
    event_key,
)
from stream.exceptions import BadEvent

NOW = 1_700_000_000_000


def test_good_event_with_and_without_key() -> None:
    value = b'{"user_id":"u42","item_id":"i9001","ts":1700000000123,"event":"click"}'
    expected = ClickEvent("u42", "i9001", 1_700_000_000_123, "click", None)
    assert decode_event(b"u42", value, now_ms=NOW) == expected
    assert decode_event(None, value, now_ms=NOW) == expected


def test_optional_fields_default_and_category() -> None:
    value = b'{"item_id":"i1","user_id":"\xc3\xa9l\xc3\xa8ve","ts":946684800000,"category":"c7"}'
    event = decode_event("élève".encode(), value, now_ms=NOW)
    assert event == ClickEvent("élève", "i1", MIN_TS_MS, "click", "c7")


@pytest.mark.parametrize(
    ("name", "key", "value", "reason"),
    malformed_records("u42", "i9001", NOW - 1000),
    ids=[case[0] for case in malformed_records("u42", "i9001", NOW - 1000)],
)
def test_malformed_kinds_are_rejected_with_their_reason(
    name: str, key: bytes | None, value: bytes | None, reason: str
) -> None:
    with pytest.raises(BadEvent) as caught:
        decode_event(key, value, now_ms=NOW)
    assert caught.value.reason == reason, caught.value
    assert caught.value.reason in REASONS


def test_catalogue_covers_many_kinds_and_every_reason() -> None:
    cases = malformed_records("u42", "i9001", NOW - 1000)
    assert len(cases) >= 15
    assert {case[3] for case in cases} == set(REASONS) - {"bad_origin"}


def test_timestamp_bounds_are_inclusive_and_skew_is_configurable() -> None:
    def at(ts: int, skew: int) -> int:
        value = json.dumps({"user_id": "u", "item_id": "i", "ts": ts}).encode()
        return decode_event(None, value, now_ms=NOW, max_future_skew_ms=skew).ts

    assert at(MIN_TS_MS, 0) == MIN_TS_MS
    assert at(NOW + 5000, 5000) == NOW + 5000
    for ts, skew in ((MIN_TS_MS - 1, 0), (NOW + 5001, 5000), (NOW + 1, 0)):
        with pytest.raises(BadEvent, match="ts_out_of_range"):
            at(ts, skew)


@pytest.mark.parametrize(
    "bad_id",
    ["", " u", "u ", "a\tb", "a\x00b", "a\x85b", "a\u2028b", "\ud800", "x" * (MAX_ID_CHARS + 1)],
)
def test_bad_ids(bad_id: str) -> None:
    value = json.dumps({"user_id": "u", "item_id": bad_id, "ts": NOW}).encode()
    with pytest.raises(BadEvent, match="bad_id"):
        decode_event(None, value, now_ms=NOW)


def test_longest_id_and_payload_bound() -> None:
    longest = "é" * MAX_ID_CHARS
    assert decode_event(None, encode_event(longest, "i", NOW, now_ms=NOW), now_ms=NOW).user_id == (
        longest
    )
    padding = MAX_EVENT_BYTES - len(b'{"user_id":"u","item_id":"i","ts":1700000000000}') - 1
    at_bound = b'{"user_id":"u","item_id":"i","ts":1700000000000}' + b" " * (padding + 1)
    assert len(at_bound) == MAX_EVENT_BYTES
    assert decode_event(None, at_bound, now_ms=NOW).ts == NOW
    with pytest.raises(BadEvent, match="too_large"):
        decode_event(None, at_bound + b" ", now_ms=NOW)


def test_every_event_type_is_accepted() -> None:
    for kind in sorted(EVENT_TYPES):
        assert decode_event(None, encode_event("u", "i", NOW, event=kind), now_ms=NOW).event == kind


def test_encode_refuses_what_the_worker_would_reject() -> None:
    with pytest.raises(BadEvent, match="ts_out_of_range"):
        encode_event("u", "i", 1_700_000_000)  # seconds, not milliseconds
    with pytest.raises(BadEvent, match="unknown_event"):
        encode_event("u", "i", NOW, event="hover")
    assert event_key("é") == "é".encode()


ids = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Zs")), min_size=1, max_size=40
)


@given(
    user=ids,
    item=ids,
    ts=st.integers(MIN_TS_MS, NOW),
    kind=st.sampled_from(sorted(EVENT_TYPES)),
    category=st.none() | ids,
)
def test_encode_decode_round_trip(user: str, item: str, ts: int, kind: str, category: str) -> None:
    value = encode_event(user, item, ts, event=kind, category=category, now_ms=NOW)
    assert decode_event(event_key(user), value, now_ms=NOW) == ClickEvent(
        user, item, ts, kind, category
    )


def _decode_only_bad_event(key: bytes | None, value: bytes | None) -> None:
    try:
        event = decode_event(key, value, now_ms=NOW)
    except BadEvent as exc:
        assert exc.reason in REASONS
    else:
        assert isinstance(event, ClickEvent)


@settings(max_examples=400)
@given(key=st.none() | st.binary(max_size=20), value=st.none() | st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_raise_only_bad_event(key: bytes | None, value: bytes | None) -> None:
    _decode_only_bad_event(key, value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(sorted(EVENT_TYPES)),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=400)
@given(
    obj=st.dictionaries(
        st.sampled_from(["user_id", "item_id", "ts", "event", "category", "extra"]),
        json_values | st.integers(MIN_TS_MS - 10, NOW + 10**6),
        max_size=6,
    ),
    key=st.none() | st.sampled_from([b"", b"u", b"x"]),
)
def test_fuzz_json_objects_raise_only_bad_event(obj: dict, key: bytes | None) -> None:
    _decode_only_bad_event(key, json.dumps(obj).encode())


@settings(max_examples=200)
@given(
    prefix=st.binary(max_size=5),
    cut=st.integers(0, 80),
    noise=st.binary(max_size=5),
)
def test_fuzz_mangled_good_events(prefix: bytes, cut: int, noise: bytes) -> None:
    good = encode_event("u42", "i9001", NOW, event="buy", category="c1")
    _decode_only_bad_event(b"u42", prefix + good[:cut] + noise + good[cut:])
