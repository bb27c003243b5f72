"""Taobao UserBehavior logs (``user,item,category,behavior,timestamp``, no header; behaviour
pv/cart/fav/buy; timestamps in seconds): sequences with a single-valued ``category`` feature,
and a replay of the log as click events in the stream's contract form.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_export.data.assemble import (
    BadLines,
    LoadResult,
    assemble,
    feature_matrix,
    numbered_lines,
    ordered_ids,
)
from model_export.exceptions import DataFormatError

logger = logging.getLogger(__name__)

FILE_NAME = "UserBehavior.csv"
BEHAVIOURS = ("pv", "cart", "fav", "buy")
# The click-event contract calls a page view a click; the other behaviours keep their names.
EVENT_NAMES = {"pv": "click", "cart": "cart", "fav": "fav", "buy": "buy"}


@dataclass(frozen=True)
class _Rows:
    users: list[str]
    items: list[str]
    categories: list[str]
    behaviours: list[str]
    times_ms: list[int]
    rows: int
    bad: BadLines


def read_taobao(
    path: str | Path,
    *,
    behaviours: Collection[str] | None = None,
    skip_bad: bool = False,
    name: str | None = None,
) -> LoadResult:
    """Load a UserBehavior CSV (or a folder holding ``UserBehavior.csv``).

    ``behaviours`` keeps only those behaviour types (default: all four). Every kept row is one
    behaviour, repeats included, ordered by timestamp then file order. An item's category is
    the first one the log gives it (later disagreements are counted in ``counts``).
    """
    csv_path = _locate(Path(path))
    keep = _behaviour_filter(behaviours)
    rows = _read_rows(csv_path, skip_bad)
    counts: dict[str, int] = {}
    selected = [i for i, b in enumerate(rows.behaviours) if b in keep]
    if len(selected) < len(rows.behaviours):
        counts["behaviours filtered out"] = len(rows.behaviours) - len(selected)
    users = [rows.users[i] for i in selected]
    items = [rows.items[i] for i in selected]
    times = [rows.times_ms[i] for i in selected]

    category_of: dict[str, str] = {}
    conflicts = 0
    for i in selected:
        known = category_of.setdefault(rows.items[i], rows.categories[i])
        conflicts += known != rows.categories[i]
    if conflicts:
        counts["rows whose category disagrees with the item's first"] = conflicts
        logger.warning("items with more than one category file=%s rows=%d", csv_path, conflicts)

    item_ids = ordered_ids(items)
    matrix, vocab, _ = feature_matrix(item_ids, {i: [c] for i, c in category_of.items()})
    interactions = assemble(
        name or csv_path.parent.name or "taobao",
        users,
        items,
        times,
        item_ids=item_ids,
        item_features={"category": matrix},
        feature_sizes={"category": len(vocab) + 1},
        item_labels=[f"category {category_of[item]}" for item in item_ids],
    )
    return LoadResult(
        interactions,
        "taobao",
        str(csv_path),
        rows.rows,
        rows.bad.count,
        rows.bad.examples,
        counts,
        {"category": vocab},
    )


def iter_events(
    path: str | Path,
    *,
    behaviours: Collection[str] | None = None,
    skip_bad: bool = False,
) -> Iterator[dict[str, Any]]:
    """The log as click events ``{"user_id", "item_id", "ts" (ms), "event", "category"}`` in
    event-time order (ties in file order); ``pv`` becomes ``"click"``.
    """
    csv_path = _locate(Path(path))
    keep = _behaviour_filter(behaviours)
    rows = _read_rows(csv_path, skip_bad)
    order = np.argsort(np.asarray(rows.times_ms, dtype=np.int64), kind="stable")
    for i in order.tolist():
        if rows.behaviours[i] in keep:
            yield {
                "user_id": rows.users[i],
                "item_id": rows.items[i],
                "ts": rows.times_ms[i],
                "event": EVENT_NAMES[rows.behaviours[i]],
                "category": rows.categories[i],
            }


def _locate(path: Path) -> Path:
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file (expected a Taobao {FILE_NAME})")
    return path


def _behaviour_filter(behaviours: Collection[str] | None) -> frozenset[str]:
    if behaviours is None:
        return frozenset(BEHAVIOURS)
    unknown = set(behaviours) - set(BEHAVIOURS)
    if unknown:
        raise ValueError(f"unknown behaviours {sorted(unknown)}: expected some of {BEHAVIOURS}")
    return frozenset(behaviours)


def _read_rows(path: Path, skip_bad: bool) -> _Rows:
    out = _Rows([], [], [], [], [], 0, BadLines(skip_bad))
    rows = 0
    with path.open(encoding="utf-8", newline="") as handle:
        for line_no, line in numbered_lines(handle):
            rows += 1
            fields = line.split(",")
            if (
                len(fields) != 5
                or not (fields[0].isdigit() and fields[1].isdigit() and fields[2].isdigit())
                or fields[3] not in EVENT_NAMES
                or not fields[4].lstrip("-").isdigit()
            ):
                out.bad.reject(
                    path,
                    line_no,
                    "user,item,category,behavior,timestamp with integer ids, a behaviour in "
                    f"{'/'.join(BEHAVIOURS)} and an integer timestamp (s)",
                    line,
                )
                continue
            out.users.append(fields[0])
            out.items.append(fields[1])
            out.categories.append(fields[2])
            out.behaviours.append(fields[3])
            out.times_ms.append(int(fields[4]) * 1000)
    out.bad.log_summary(path)
    return dataclasses.replace(out, rows=rows)
