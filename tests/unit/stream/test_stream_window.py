"""Window properties: equal to the batch definition for any arrival order, idempotent on replay."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.exceptions import StreamError
from stream.window import (
    Behaviour,
    BehaviourWindow,
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
