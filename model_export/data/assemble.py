"""Shared pieces of every loader: bad-line bookkeeping, the load result, and the step that turns
parsed rows into an :class:`~model_export.dataset.Interactions` (id maps, time order, features).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_export.dataset import Interactions
from model_export.exceptions import DataFormatError

logger = logging.getLogger(__name__)

# How many bad-line messages a LoadResult keeps as examples (the count is always exact).
MAX_EXAMPLES = 10


@dataclass
class BadLines:
    """Collects malformed input lines: raises on the first one, or counts them with ``skip_bad``."""

    skip_bad: bool
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def reject(self, path: Path, line_no: int, expected: str, got: str) -> None:
        """Record that ``path`` line ``line_no`` (1-based) is not ``expected``.

        Raises :class:`DataFormatError` unless the collector skips bad lines.
        """
        shown = got if len(got) <= 120 else got[:117] + "..."
        message = f"{path}:{line_no}: expected {expected}, got {shown!r}"
        if not self.skip_bad:
            raise DataFormatError(f"{message} (pass skip_bad=True to count and skip bad lines)")
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(message)

    def log_summary(self, path: Path) -> None:
        if self.count:
            logger.warning(
                "skipped bad lines file=%s count=%d first=%s",
                path,
                self.count,
                self.examples[0],
            )


def numbered_lines(lines: Iterable[str], first_line: int = 1) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for every line that is not empty once its line ending is removed;
    numbers start at ``first_line`` and count the empty lines too.
    """
    for line_no, raw in enumerate(lines, start=first_line):
        line = raw.rstrip("\r\n")
        if line:
            yield line_no, line


@dataclass(frozen=True)
class LoadResult:
    """What a loader returns: the interactions plus an account of what was read and left out.

    ``bad_lines`` counts malformed lines skipped with ``skip_bad=True`` (the first few messages
    are in ``bad_line_examples``); ``counts`` holds rows left out on purpose and data found
    missing, by reason;
    ``feature_vocab[name][j - 1]`` is the source's value for feature id ``j`` of ``name``.
    """

    interactions: Interactions
    format: str
    source: str
    rows: int
    bad_lines: int = 0
    bad_line_examples: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    feature_vocab: dict[str, list[str]] = field(default_factory=dict)


def natural_key(value: str) -> tuple[int, int, str]:
    """Sort key putting integer-like ids in numeric order before any other ids."""
    if value.isdigit():
        return (0, int(value), "")
    return (1, 0, value)


def ordered_ids(values: Sequence[str]) -> list[str]:
    """The distinct ``values`` in natural order (numeric ids numerically)."""
    return sorted(set(values), key=natural_key)


def assemble(
    name: str,
    users: Sequence[str],
    items: Sequence[str],
    timestamps_ms: Sequence[int] | None,
    *,
    item_ids: Sequence[str] | None = None,
    item_features: Mapping[str, np.ndarray] | None = None,
    feature_sizes: Mapping[str, int] | None = None,
    item_labels: Sequence[str] | None = None,
) -> Interactions:
    """Build :class:`Interactions` from parallel per-event columns given in file order.

    Each user's events are ordered by timestamp with ties broken by file order (a stable sort);
    without timestamps file order is the event order. ``item_ids`` fixes the item vocabulary
    (default: the distinct items, numeric ids in numeric order) and must then cover every item;
    feature matrices and labels must be aligned with it (row/entry 0 of a matrix is padding).
    """
    if len(users) != len(items) or (timestamps_ms is not None and len(timestamps_ms) != len(users)):
        raise ValueError("users, items and timestamps must have the same length")
    vocabulary = list(item_ids) if item_ids is not None else ordered_ids(items)
    item_index = {item: i + 1 for i, item in enumerate(vocabulary)}
    user_ids = ordered_ids(users)
    user_index = {user: u for u, user in enumerate(user_ids)}

    user_col = np.fromiter((user_index[u] for u in users), dtype=np.int64, count=len(users))
    item_col = np.fromiter((item_index[i] for i in items), dtype=np.int64, count=len(items))
    ts_col = None if timestamps_ms is None else np.asarray(timestamps_ms, dtype=np.int64)

    # lexsort sorts by the last key first and is stable, so equal (user, ts) keep file order.
    order = (
        np.argsort(user_col, kind="stable") if ts_col is None else np.lexsort((ts_col, user_col))
    )
    boundaries = np.flatnonzero(np.diff(user_col[order])) + 1
    sequences: list[np.ndarray] = np.split(item_col[order], boundaries) if len(order) else []
    timestamps: list[np.ndarray] | None = None
    if ts_col is not None:
        timestamps = np.split(ts_col[order], boundaries) if len(order) else []

    return Interactions(
        name=name,
        item_ids=vocabulary,
        users=user_ids,
        sequences=[s.copy() for s in sequences],
        timestamps=None if timestamps is None else [t.copy() for t in timestamps],
        item_features=dict(item_features or {}),
        feature_sizes=dict(feature_sizes or {}),
        item_labels=None if item_labels is None else list(item_labels),
    )


def feature_matrix(
    item_ids: Sequence[str],
    values: Mapping[str, Sequence[str]],
    *,
    max_width: int | None = None,
    vocabulary: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str], int]:
    """A multi-valued item feature as an int64 matrix ``[len(item_ids) + 1, width]``.

    ``values[item]`` lists an item's feature values (source order; duplicates removed). Feature
    ids are 1-based positions in ``vocabulary`` (default: the values kept, in natural order);
    0 = none. ``width`` is the longest list, capped at ``max_width``. Returns the matrix, the
    vocabulary and how many values the cap cut off.
    """
    lists = [list(dict.fromkeys(values.get(item, ()))) for item in item_ids]
    longest = max((len(vs) for vs in lists), default=0)
    width = max(1, longest if max_width is None else min(longest, max_width))
    # Values only ever cut off by the cap (or only on unknown items) get no id.
    vocab = (
        list(vocabulary)
        if vocabulary is not None
        else ordered_ids([v for vs in lists for v in vs[:width]])
    )
    feature_id = {v: j + 1 for j, v in enumerate(vocab)}
    matrix = np.zeros((len(item_ids) + 1, width), dtype=np.int64)
    truncated = 0
    for row, vs in enumerate(lists, start=1):
        truncated += max(0, len(vs) - width)
        for col, v in enumerate(vs[:width]):
            matrix[row, col] = feature_id[v]
    return matrix, vocab, truncated
