"""The pure parts of precompute's cluster listening: which user a keyspace notification names,
and when the cluster's primaries differ from the ones subscribed to."""

from __future__ import annotations

from recall.precompute import notified_user, primaries_change

HEAD = "__keyspace@0__:"


def message(channel: bytes | str, data: bytes | str, kind: str = "pmessage") -> dict:
    return {"type": kind, "pattern": None, "channel": channel, "data": data}


def test_an_hset_on_a_record_key_names_its_user() -> None:
    assert notified_user(message(b"__keyspace@0__:mind:u:{a{b}}", b"hset"), HEAD, "mind:") == "a{b}"
    assert notified_user(message("__keyspace@0__:mind:u:{u1}", "hset"), HEAD, "mind:") == "u1"


def test_other_messages_name_no_user() -> None:
    record = b"__keyspace@0__:mind:u:{u1}"
    assert notified_user(None, HEAD, "mind:") is None
    assert notified_user(message(record, b"del"), HEAD, "mind:") is None
    assert notified_user(message(record, b"hset", kind="psubscribe"), HEAD, "mind:") is None
    assert notified_user(message(b"__keyspace@0__:mind:c:{u1}", b"hset"), HEAD, "mind:") is None
    assert notified_user(message(b"__keyspace@1__:mind:u:{u1}", b"hset"), HEAD, "mind:") is None
    assert notified_user(message(record, b"hset"), HEAD, "other:") is None


def test_primaries_change_names_the_nodes_gone_and_new() -> None:
    subscribed = ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
    assert primaries_change(subscribed, list(reversed(subscribed))) is None
    change = primaries_change(subscribed, ["127.0.0.1:7000", "127.0.0.1:7004", "127.0.0.1:7002"])
    assert change == (
        "redis cluster primaries changed: gone=['127.0.0.1:7001'] new=['127.0.0.1:7004']"
    )
    assert primaries_change(subscribed, [*subscribed, "127.0.0.1:7006"]) == (
        "redis cluster primaries changed: gone=[] new=['127.0.0.1:7006']"
    )
