"""Window properties: equal to the batch definition for any arrival order, idempotent on replay."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.exceptions import StreamError
from stream.window import (
    FORMAT_VERSION,
    RECENT_OFFSETS,
    Behaviour,
    BehaviourWindow,
    apply_batch,
    apply_event,
    apply_events,
    batch_window,
    decode_window,
    encode_window,
)

T0 = 1_700_000_000_000


def _log(draws: list[tuple[int, int]]) -> list[Behaviour]:
    """Arrival-ordered behaviours with unique item ids and per-source increasing offsets."""
    next_offset: dict[str, int] = {}
    out = []
    for n, (dt, part) in enumerate(draws):
        source = f"clicks/{part}"
        offset = next_offset.get(source, 0) + 7  # offsets need not be dense
        next_offset[source] = offset
        out.append(Behaviour(item_id=f"i{n}", ts=T0 + dt, source=source, offset=offset))
    return out


logs = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 2)), max_size=40).map(_log)
max_lens = st.integers(1, 12)
horizons = st.integers(0, 70)


def _by_definition(log: list[Behaviour], max_len: int, horizon_ms: int) -> list[tuple[int, str]]:
    """Independent reference: stable sort by event time, horizon from the newest, last max_len."""
    ordered = sorted(log, key=lambda b: b.ts)  # sorted() is stable: ties keep arrival order
    if not ordered:
        return []
    newest = ordered[-1].ts
    return [(b.ts, b.item_id) for b in ordered if b.ts >= newest - horizon_ms][-max_len:]


def _stream(log: list[Behaviour], max_len: int, horizon_ms: int) -> BehaviourWindow:
    window = None
    for b in log:
        window, _ = apply_event(window, b, max_len=max_len, horizon_ms=horizon_ms)
    return window or BehaviourWindow()


@settings(max_examples=300)
@given(log=logs, max_len=max_lens, horizon=horizons)
def test_streaming_equals_the_definition(log, max_len, horizon) -> None:
    window = _stream(log, max_len, horizon)
    assert list(zip(window.ts, window.items, strict=True)) == _by_definition(log, max_len, horizon)
    assert window.seq == len(log)
    assert batch_window(log, max_len=max_len, horizon_ms=horizon) == window
    assert len(window) <= max_len
    assert list(window.ts) == sorted(window.ts)
    assert len(set(window.items)) == len(window.items)


@settings(max_examples=300)
@given(log=logs, max_len=max_lens, horizon=horizons, data=st.data())
def test_replay_after_any_crash_point_is_a_no_op(log, max_len, horizon, data) -> None:
    """State saved after k events, input replayed from any j <= k: same window, nothing twice."""
    k = data.draw(st.integers(0, len(log)))
    j = data.draw(st.integers(0, k))
    full, applied = apply_events(None, log, max_len=max_len, horizon_ms=horizon)
    saved, _ = apply_events(None, log[:k], max_len=max_len, horizon_ms=horizon)
    resumed, applied_again = apply_events(saved, log[j:], max_len=max_len, horizon_ms=horizon)
    assert resumed == full
    assert applied == len(log)
    assert applied_again == len(log) - k
    again, zero = apply_events(full, log[j:], max_len=max_len, horizon_ms=horizon)
    assert zero == 0
    assert again is full


@settings(max_examples=200)
@given(log=logs, max_len=max_lens, horizon=horizons, data=st.data())
def test_batch_apply_equals_one_by_one(log, max_len, horizon, data) -> None:
    cut = data.draw(st.integers(0, len(log)))
    first, _ = apply_events(None, log[:cut], max_len=max_len, horizon_ms=horizon)
    second, _ = apply_events(first, log[cut:], max_len=max_len, horizon_ms=horizon)
    assert second == _stream(log, max_len, horizon)


@settings(max_examples=200)
@given(log=logs, max_len=max_lens, horizon=horizons)
def test_serialisation_round_trip(log, max_len, horizon) -> None:
    window = _stream(log, max_len, horizon)
    assert decode_window(encode_window(window)) == window


def test_late_event_goes_in_place_and_ties_keep_arrival_order() -> None:
    w, _ = apply_events(
        None,
        [
            Behaviour("a", T0 + 10, "c/0", 1),
            Behaviour("b", T0 + 30, "c/0", 2),
            Behaviour("late", T0 + 20, "c/1", 5),
            Behaviour("tie", T0 + 10, "c/1", 6),
        ],
        max_len=10,
        horizon_ms=1000,
    )
    assert w.items == ("a", "tie", "late", "b")
    assert w.offsets == {"c/0": 2, "c/1": 6}
    assert w.newest_ts == T0 + 30


def test_horizon_and_max_len_drop_the_oldest() -> None:
    log = [Behaviour(f"i{n}", T0 + n * 100, "c/0", n) for n in range(6)]
    w, _ = apply_events(None, log, max_len=4, horizon_ms=250)
    assert w.items == ("i3", "i4", "i5")  # i2 is 300 ms older than the newest
    w, _ = apply_events(None, log, max_len=2, horizon_ms=10_000)
    assert w.items == ("i4", "i5")
    old = Behaviour("old", T0, "c/0", 99)
    too_old, changed = apply_event(w, old, max_len=2, horizon_ms=10_000)
    assert changed and too_old.items == ("i4", "i5") and too_old.seq == w.seq + 1
    beyond, changed = apply_event(w, old, max_len=5, horizon_ms=250)
    assert changed and beyond.items == ("i4", "i5") and beyond.offsets["c/0"] == 99


def test_bad_parameters_and_undecodable_records() -> None:
    with pytest.raises(ValueError, match="max_len"):
        apply_events(None, [], max_len=0, horizon_ms=1)
    for raw in (b"", b"[]", b'{"v":2}', b'{"v":1,"i":["a"],"t":[],"o":{},"s":1}', b"\xff"):
        with pytest.raises(StreamError):
            decode_window(raw)


def _rekeyed_log(draws: list[tuple[int, int]]) -> list[Behaviour]:
    """Re-keyed events (unordered sources) with distinct offsets, in origin-offset order."""
    return [
        Behaviour(f"r{n}", T0 + dt, f"clicks/{part}+rekey", 3 * n + part, ordered=False)
        for n, (dt, part) in enumerate(draws)
    ]


rekeyed_logs = st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 1)), max_size=RECENT_OFFSETS
).map(_rekeyed_log)


@settings(max_examples=300)
@given(log=rekeyed_logs, max_len=max_lens, horizon=horizons, data=st.data())
def test_rekeyed_copies_in_any_order_apply_each_event_once(log, max_len, horizon, data) -> None:
    """After a crash, copies of re-keyed events arrive in any order and any number of times
    (an original lost, its copy after newer events): each distinct event counts exactly once."""
    arrivals = data.draw(st.permutations(log + data.draw(st.lists(st.sampled_from(log or [None])))))
    arrivals = [b for b in arrivals if b is not None]
    window, new = apply_batch(None, arrivals, max_len=max_len, horizon_ms=horizon)
    distinct = {(b.source, b.offset): b for b in arrivals}
    assert sum(new) == len(distinct) == window.seq
    seen: set[tuple[str, int]] = set()
    first_copies = []
    for b in arrivals:
        if (b.source, b.offset) not in seen:
            seen.add((b.source, b.offset))
            first_copies.append(b)
    assert [b for b, n in zip(arrivals, new, strict=True) if n] == first_copies
    expected = _by_definition(first_copies, max_len, horizon)
    assert list(zip(window.ts, window.items, strict=True)) == expected
    assert batch_window(arrivals, max_len=max_len, horizon_ms=horizon) == window
    assert decode_window(encode_window(window)) == window
    again, zero = apply_events(window, arrivals, max_len=max_len, horizon_ms=horizon)
    assert zero == 0 and again is window


def test_rekeyed_event_overtaken_by_a_newer_one_is_still_applied() -> None:
    """The restart case: the original of offset 5 was never delivered, offset 9 was; the copy
    of 5 forwarded again on replay arrives after 9 and must count, and only once."""
    b5 = Behaviour("a", T0 + 5, "clicks/0+rekey", 5, ordered=False)
    b9 = Behaviour("b", T0 + 9, "clicks/0+rekey", 9, ordered=False)
    w, _ = apply_event(None, b9, max_len=10, horizon_ms=1000)
    w, changed = apply_event(w, b5, max_len=10, horizon_ms=1000)
    assert changed and w.items == ("a", "b") and w.seq == 2
    assert w.offsets == {"clicks/0+rekey": 9} and w.recent == {"clicks/0+rekey": (5, 9)}
    for copy in (b5, b9):
        same, changed = apply_event(w, copy, max_len=10, horizon_ms=1000)
        assert not changed and same is w
    # an ordered source skips anything at or below its last offset, as before
    o9 = Behaviour("b", T0 + 9, "clicks/0", 9)
    o5 = Behaviour("a", T0 + 5, "clicks/0", 5)
    w, _ = apply_event(None, o9, max_len=10, horizon_ms=1000)
    assert apply_event(w, o5, max_len=10, horizon_ms=1000) == (w, False)
    assert w.recent == {} and b'"r"' not in encode_window(w)


def test_rekeyed_offsets_kept_are_bounded() -> None:
    log = [
        Behaviour(f"i{n}", T0 + n, "clicks/0+rekey", 10 * n, ordered=False)
        for n in range(RECENT_OFFSETS + 5)
    ]
    w, applied = apply_events(None, log, max_len=8, horizon_ms=10_000)
    assert applied == len(log)
    kept = w.recent["clicks/0+rekey"]
    assert kept == tuple(10 * n for n in range(5, RECENT_OFFSETS + 5))
    # below the whole (full) set: taken for a replay; inside it but unseen: applied
    below = Behaviour("x", T0, "clicks/0+rekey", 10 * 4 + 1, ordered=False)
    inside = Behaviour("y", T0 + 100, "clicks/0+rekey", 10 * 6 + 1, ordered=False)
    assert apply_event(w, below, max_len=8, horizon_ms=10_000) == (w, False)
    w2, changed = apply_event(w, inside, max_len=8, horizon_ms=10_000)
    assert changed and len(w2.recent["clicks/0+rekey"]) == RECENT_OFFSETS
    assert w2.recent["clicks/0+rekey"][0] == 10 * 6


@settings(max_examples=200)
@given(
    items=st.lists(st.text(max_size=12), max_size=50),
    offsets=st.dictionaries(st.text(max_size=20), st.integers(0, 2**62), max_size=4),
    recent=st.dictionaries(
        st.text(max_size=20), st.lists(st.integers(0, 2**62), max_size=32), max_size=3
    ),
)
def test_encoding_is_the_json_modules_compact_utf8_output(items, offsets, recent) -> None:
    # Changelog records written before orjson (and readers using any JSON library) stay valid:
    # the bytes are those of json.dumps(..., separators=(",", ":"), ensure_ascii=False).
    stamps = tuple(T0 + n for n in range(len(items)))
    sorted_recent = {k: tuple(sorted(v)) for k, v in recent.items()}
    window = BehaviourWindow(tuple(items), stamps, offsets, len(items), sorted_recent)
    obj: dict[str, object] = {
        "v": FORMAT_VERSION,
        "i": items,
        "t": stamps,
        "o": offsets,
        "s": len(items),
    }
    if sorted_recent:
        obj["r"] = sorted_recent
    expected = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert encode_window(window) == expected
    assert decode_window(expected) == window
