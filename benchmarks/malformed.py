"""A catalogue of malformed click records, one per way a producer can get the contract wrong.

Used by the tests (unit and integration) and by ``mindstream bench stream --bad-every`` to
exercise the dead-letter path with realistic garbage. Each entry is
``(name, key, value, expected reason)``; ``user_id`` is the id the record pretends to be about.
"""

from __future__ import annotations


def malformed_records(
    user_id: str, item_id: str, ts: int
) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """Malformed records about ``user_id``; every one must be dead-lettered with its reason."""
    key = user_id.encode()
    good = f'"user_id":"{user_id}","item_id":"{item_id}"'
    return [
        ("not json", key, b"user clicked item", "not_json"),
        ("truncated json", key, ("{" + good + ',"ts":').encode(), "not_json"),
        ("json array", key, f'["{user_id}","{item_id}",{ts}]'.encode(), "not_object"),
        ("json string", key, b'"click"', "not_object"),
        ("tombstone", key, None, "null_value"),
        ("empty value", key, b"", "not_json"),
        (
            "latin-1 bytes",
            key,
            ("{" + good + f',"ts":{ts},"category":"caf\xe9"}}').encode("latin-1"),
            "not_utf8",
        ),
        ("utf-16", key, ("{" + good + f',"ts":{ts}}}').encode("utf-16"), "not_utf8"),
        ("utf-8 bom", key, b"\xef\xbb\xbf" + ("{" + good + f',"ts":{ts}}}').encode(), "not_json"),
        ("missing ts", key, ("{" + good + "}").encode(), "missing_field"),
        ("missing item", key, f'{{"user_id":"{user_id}","ts":{ts}}}'.encode(), "missing_field"),
        ("ts as string", key, ("{" + good + f',"ts":"{ts}"}}').encode(), "wrong_type"),
        ("ts as float", key, ("{" + good + f',"ts":{ts}.5}}').encode(), "wrong_type"),
        ("ts as bool", key, ("{" + good + ',"ts":true}').encode(), "wrong_type"),
        ("ts NaN", key, ("{" + good + ',"ts":NaN}').encode(), "not_json"),
        ("negative ts", key, ("{" + good + ',"ts":-5}').encode(), "ts_out_of_range"),
        ("ts in seconds", key, ("{" + good + f',"ts":{ts // 1000}}}').encode(), "ts_out_of_range"),
        ("ts far future", key, ("{" + good + ',"ts":99999999999999}').encode(), "ts_out_of_range"),
        ("ts in exponent notation", key, ("{" + good + ',"ts":1.7e12}').encode(), "wrong_type"),
        (
            "user id number",
            key,
            f'{{"user_id":42,"item_id":"{item_id}","ts":{ts}}}'.encode(),
            "wrong_type",
        ),
        (
            "empty item id",
            key,
            f'{{"user_id":"{user_id}","item_id":"","ts":{ts}}}'.encode(),
            "bad_id",
        ),
        (
            "item id newline",
            key,
            f'{{"user_id":"{user_id}","item_id":"a\\nb","ts":{ts}}}'.encode(),
            "bad_id",
        ),
        (
            "item id too long",
            key,
            f'{{"user_id":"{user_id}","item_id":"{"x" * 500}","ts":{ts}}}'.encode(),
            "bad_id",
        ),
        (
            "unknown event",
            key,
            ("{" + good + f',"ts":{ts},"event":"hover"}}').encode(),
            "unknown_event",
        ),
        (
            "typo field",
            key,
            ("{" + good + f',"ts":{ts},"evnt":"click"}}').encode(),
            "unknown_field",
        ),
        (
            "duplicate field",
            key,
            ("{" + good + f',"ts":{ts},"ts":{ts + 1}}}').encode(),
            "duplicate_field",
        ),
        (
            "huge payload",
            key,
            ("{" + good + f',"ts":{ts},"category":"' + "c" * 10_000 + '"}').encode(),
            "too_large",
        ),
        ("empty key", b"", ("{" + good + f',"ts":{ts}}}').encode(), "empty_key"),
        (
            "key of another user",
            key + b"-other",
            ("{" + good + f',"ts":{ts}}}').encode(),
            "key_mismatch",
        ),
        ("nested object", key, ("{" + good + f',"ts":{{"ms":{ts}}}}}').encode(), "wrong_type"),
    ]
