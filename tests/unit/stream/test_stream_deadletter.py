"""Dead-letter records keep the original bytes and carry a reason and the source position."""

from __future__ import annotations

import pytest

from stream.deadletter import FORMAT, H_REASON, H_SOURCE, DeadLetter, parse_dead_letter
from stream.exceptions import StreamError


def test_round_trip_keeps_original_bytes_and_headers() -> None:
    letter = DeadLetter(
        key=None,
        value=b"\xff\xfe not utf-8",
        reason="not_utf8",
        detail="x" * 5000,
        source_topic="clicks.v2",
        source_partition=3,
        source_offset=123456,
        source_timestamp_ms=1_700_000_000_000,
        original_headers=(("trace", b"\x00\x01"),),
    )
    headers = letter.headers()
    assert headers[0] == ("trace", b"\x00\x01")
    assert dict(headers)[H_SOURCE] == b"clicks.v2/3/123456"
    back = parse_dead_letter(None, b"\xff\xfe not utf-8", headers)
    assert back.value == letter.value
    assert back.key is None
    assert back.reason == "not_utf8"
    assert back.source == "clicks.v2/3/123456"
    assert back.detail == "x" * 1000
    assert back.original_headers == (("trace", b"\x00\x01"),)
    assert back.source_timestamp_ms == 1_700_000_000_000


def test_refuses_records_that_are_not_dead_letters() -> None:
    with pytest.raises(StreamError, match="not a"):
        parse_dead_letter(b"k", b"v", [])
    with pytest.raises(StreamError, match="malformed"):
        parse_dead_letter(b"k", b"v", [("mindstream.format", FORMAT.encode()), (H_REASON, b"x")])
