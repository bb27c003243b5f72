"""The Redis interest record layout, decoded independently of the encoder."""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable, Hashable

import numpy as np
import pytest
import redis.exceptions
from redis.crc import key_slot

from stream.exceptions import RecordError
from stream.record import (
    FIELDS,
    MONOTONIC_WRITE_BY_NODE,
    MONOTONIC_WRITE_LUA,
    RECORDS_PER_CALL,
    InterestRecord,
    _reroutes,
    _script_calls,
    _written,
    decode_record,
    encode_record,
    record_key,
)


def _record(k: int = 2, dim: int = 3, seq: int = 7) -> InterestRecord:
    vectors = np.arange(k * dim, dtype=np.float32).reshape(k, dim) / 7 - 0.5
    return InterestRecord(
        user_id="u42",
        vectors=vectors,
        k=k,
        dim=dim,
        model="mind-abc",
        event_ts=1_700_000_000_123,
        updated_ms=1_700_000_000_456,
        n_behaviours=5,
        seq=seq,
        src="clicks/3/99",
        items=("i1", "é2", "i3"),
    )


def test_key_has_a_cluster_hash_tag() -> None:
    assert record_key("mind:", "u42") == "mind:u:{u42}"
    assert record_key("", "a}b") == "u:{a}b}"


def test_layout_as_documented() -> None:
    record = _record()
    fields = encode_record(record)
    assert tuple(fields) == FIELDS
    # little-endian float32, row-major, read with struct (no numpy) as another language would
    flat = struct.unpack("<6f", fields["v"])
    assert np.allclose(np.array(flat).reshape(2, 3), record.vectors)
    assert fields["k"] == b"2" and fields["dim"] == b"3" and fields["seq"] == b"7"
    assert fields["model"] == b"mind-abc" and fields["src"] == b"clicks/3/99"
    assert fields["event_ts"] == b"1700000000123" and fields["n_behaviours"] == b"5"
    assert json.loads(fields["items"]) == ["i1", "é2", "i3"]


def test_round_trip_with_bytes_and_str_field_names() -> None:
    record = _record()
    fields = encode_record(record)
    for raw in (fields, {name.encode(): value for name, value in fields.items()}):
        back = decode_record("u42", raw)
        assert np.array_equal(back.vectors, record.vectors)
        assert back.vectors.dtype == np.float32
        for name in ("k", "dim", "model", "event_ts", "updated_ms", "n_behaviours", "seq", "src"):
            assert getattr(back, name) == getattr(record, name)
        assert back.items == record.items


def test_zero_interests_round_trip() -> None:
    record = _record(k=0)
    assert encode_record(record)["v"] == b""
    assert decode_record("u42", encode_record(record)).vectors.shape == (0, 3)


@pytest.mark.parametrize(
    "change",
    [
        {"v": b"\x00" * 5},
        {"k": b"three"},
        {"items": b'{"a":1}'},
        {"items": b"[1,2]"},
        {"seq": b""},
        {"v": "decoded text"},
    ],
)
def test_malformed_records_raise_record_error(change: dict) -> None:
    fields = {**encode_record(_record()), **change}
    with pytest.raises(RecordError):
        decode_record("u42", fields)


def test_missing_field_and_shape_mismatch() -> None:
    fields = encode_record(_record())
    del fields["src"]
    with pytest.raises(RecordError, match="src"):
        decode_record("u42", fields)
    with pytest.raises(RecordError, match="shape"):
        InterestRecord("u", np.zeros((2, 2), np.float32), 2, 3, "m", 0, 0, 0, 0, "s", ())


def test_script_calls_send_keys_then_values_in_bounded_chunks() -> None:
    records = [
        dataclasses.replace(_record(seq=n), user_id=f"u{n}") for n in range(RECORDS_PER_CALL + 2)
    ]
    calls, order = _script_calls("p:", records)
    assert order == list(range(len(records)))
    assert [len(call.keys) for call in calls] == [RECORDS_PER_CALL, 2]
    for call, chunk in zip(
        calls, (records[:RECORDS_PER_CALL], records[RECORDS_PER_CALL:]), strict=True
    ):
        assert call.keys == [record_key("p:", r.user_id) for r in chunk]
        # the values as one MessagePack array (32) of strings (32), record after record
        packed = call.values
        assert packed[0] == 0xDD and int.from_bytes(packed[1:5]) == len(chunk) * len(FIELDS)
        values, pos = [], 5
        while pos < len(packed):
            assert packed[pos] == 0xDB
            size = int.from_bytes(packed[pos + 1 : pos + 5])
            values.append(packed[pos + 5 : pos + 5 + size])
            pos += 5 + size
        assert len(values) == len(chunk) * len(FIELDS)
        for n, record in enumerate(chunk):
            own = values[n * len(FIELDS) : (n + 1) * len(FIELDS)]
            assert own == list(encode_record(record).values())
    # both scripts read seq at the position of its field among a record's values
    for source in (MONOTONIC_WRITE_LUA, MONOTONIC_WRITE_BY_NODE.source):
        assert f"tonumber(values[base + {FIELDS.index('seq') + 1}])" in source
    assert _script_calls("p:", []) == ([], [])


def test_the_write_by_node_takes_its_keys_from_the_arguments_across_slots() -> None:
    # Redis parses the flag only on the first line; the keys follow the values in ARGV
    assert MONOTONIC_WRITE_BY_NODE.source.startswith("#!lua flags=allow-cross-slot-keys\n")
    assert "local keys = {unpack(ARGV, 2)}" in MONOTONIC_WRITE_BY_NODE.source
    assert "local keys = KEYS" in MONOTONIC_WRITE_LUA and "#!lua" not in MONOTONIC_WRITE_LUA
    # apart from where the keys come from, the two scripts are the same steps
    body = MONOTONIC_WRITE_BY_NODE.source.split("\n", 1)[1]
    assert body.replace("{unpack(ARGV, 2)}", "KEYS") == MONOTONIC_WRITE_LUA


@pytest.mark.parametrize(
    "group_of",
    [key_slot, lambda key: ("node-a", "node-b", "node-c")[key_slot(key) % 3]],
    ids=["by-slot", "by-node"],
)
def test_script_calls_never_mix_groups_and_keep_each_users_order(
    group_of: Callable[[bytes], Hashable],
) -> None:
    users = [f"u{n % 40}" for n in range(700)]  # each user several times
    records = [dataclasses.replace(_record(seq=n), user_id=user) for n, user in enumerate(users)]
    calls, order = _script_calls("p:", records, group_of=group_of)
    assert sorted(order) == list(range(len(records)))
    position = 0
    for call in calls:
        assert {group_of(key.encode()) for key in call.keys} == {call.group}
        assert len(call.keys) <= RECORDS_PER_CALL
        for n, key in zip(order[position : position + len(call.keys)], call.keys, strict=True):
            assert key == record_key("p:", records[n].user_id)
        position += len(call.keys)
    for user in set(users):  # a user's records keep their batch order
        mine = [n for n in order if records[n].user_id == user]
        assert mine == sorted(mine)
    # the hash tag puts a user's key in the slot of the bare user id
    assert key_slot(record_key("p:", "u7").encode()) == key_slot(b"u7")


def test_only_a_stale_route_or_an_unreachable_master_is_written_again_per_slot() -> None:
    error = redis.exceptions
    rerouted = [
        error.ConnectionError("Connection refused"),
        error.TimeoutError("Timeout reading from socket"),
        error.ClusterDownError("CLUSTERDOWN The cluster is down"),
        error.SlotNotCoveredError("slot 7 is not covered"),
        error.ResponseError(
            "Command # 2 (EVALSHA ...) of pipeline caused error: Script attempted to access a "
            "non local key in a cluster node script: 3ef3, on @user_script:2."
        ),
        error.ResponseError("Script attempted to execute a command while the cluster is down"),
    ]
    kept = [
        error.NoPermissionError("NOPERM this user has no permissions to run 'evalsha'"),
        error.NoScriptError("NOSCRIPT No matching script"),
        error.ResponseError("OOM command not allowed when used memory > 'maxmemory'"),
    ]
    assert all(_reroutes(exc) for exc in rerouted)
    assert not any(_reroutes(exc) for exc in kept)


def test_a_short_script_answer_is_an_error() -> None:
    assert _written([[1, 0], [1]], [0, 1, 2]) == [True, False, True]
    assert _written([[1], [0, 1]], [2, 0, 1]) == [False, True, True]
    with pytest.raises(RecordError, match="2 flags for 3 records"):
        _written([[1, 0]], [0, 1, 2])
