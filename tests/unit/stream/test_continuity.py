"""The offset guard: replays pass, a record beyond the expected offset is a hole."""

from __future__ import annotations

from stream.continuity import Hole, OffsetGuard


def test_contiguous_records_and_replays_pass() -> None:
    guard = OffsetGuard()
    guard.reset({("c", 0): 10, ("c", 1): 0})
    assert guard.check([("c", 0, 10), ("c", 1, 0), ("c", 0, 11), ("c", 0, 12)]) == []
    # a seek back re-delivers older records: replays, no hole, the expectation stays
    assert guard.check([("c", 0, 10), ("c", 0, 11), ("c", 0, 12), ("c", 0, 13)]) == []
    assert guard.expected == {("c", 0): 14, ("c", 1): 1}


def test_a_skipped_record_is_a_hole() -> None:
    guard = OffsetGuard()
    guard.reset({("c", 1): 128})
    holes = guard.check([("c", 1, 128), ("c", 1, 129), ("c", 1, 131), ("c", 1, 132)])
    assert holes == [Hole("c", 1, 130, 131)]
    assert str(holes[0]) == "c[1] offsets 130..130"


def test_unknown_partitions_start_where_they_are_first_seen() -> None:
    guard = OffsetGuard()
    assert guard.check([("r", 0, 7), ("r", 0, 8)]) == []
    assert guard.check([("r", 0, 10)]) == [Hole("r", 0, 9, 10)]


def test_reset_replaces_the_previous_assignment() -> None:
    guard = OffsetGuard()
    guard.reset({("c", 0): 5})
    guard.check([("c", 0, 5), ("c", 0, 6)])
    guard.reset({("c", 1): 3})  # c[0] now belongs to another worker
    assert guard.expected == {("c", 1): 3}
    assert guard.check([("c", 0, 50)]) == []  # reassigned later without a reset: trusted
