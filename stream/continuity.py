"""Which offset each source partition must deliver next: a record beyond it means the consumer
skipped records (pure logic; the worker acts on what :meth:`OffsetGuard.check` reports).

Within one assignment a partition's records reach the worker in offset order, from the position
the worker sought to (``stream.positions``): the next record is the expected offset (then the
one after it is expected), or an older one (a replay after a seek, harmless: windows skip
replays). A newer one means records in between never reached the worker although the consumer
moved past them (Faust can acknowledge a record it never delivers; see ``stream.positions``):
applying the newer record would make the window take the skipped ones for replays later, so the
worker must not apply it. Topics with real offset gaps (transactional producers, compaction) can
be accepted with ``MINDSTREAM_STREAM_ALLOW_OFFSET_GAPS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Partition = tuple[str, int]


@dataclass(frozen=True)
class Hole:
    """Offsets ``expected`` .. ``got - 1`` of a partition were skipped."""

    topic: str
    partition: int
    expected: int
    got: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}] offsets {self.expected}..{self.got - 1}"


class OffsetGuard:
    """The next expected offset of each source partition of the current assignment."""

    def __init__(self) -> None:
        self.expected: dict[Partition, int] = {}

    def next_expected(self, topic: str, partition: int) -> int | None:
        return self.expected.get((topic, partition))

    def reset(self, positions: Mapping[Partition, int]) -> None:
        """A new assignment: each partition starts where the worker sought it to."""
        self.expected = dict(positions)

    def check(self, records: Iterable[tuple[str, int, int]]) -> list[Hole]:
        """Advance over (topic, partition, offset) records in arrival order; return the holes
        (none for replays, nor for a partition the guard has no position for yet)."""
        holes = []
        for topic, partition, offset in records:
            key = (topic, partition)
            want = self.expected.get(key)
            if want is not None and offset > want:
                holes.append(Hole(topic, partition, want, offset))
            if want is None or offset >= want:
                self.expected[key] = offset + 1
        return holes
