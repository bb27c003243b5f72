"""Candidate merge as MIND is served: every active interest retrieves its top-N items, the union
is de-duplicated keeping each item's best score (and the interest that found it), items the
user has already seen are left out, and the best ``n`` are returned; optionally ComiRec's
controllable aggregation trades score for category diversity. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple

import numpy as np


class Candidate(NamedTuple):
    """One recalled item: its bundle row, its best inner product, and the interest behind it.

    A named tuple: immutable like a frozen dataclass, at half its construction cost (a request
    builds ``n`` of them; BENCHMARKS.md)."""

    row: int
    score: float
    interest: int


def search_width(n: int, n_excluded: int) -> int:
    """Items each interest must retrieve so that ``n`` remain after excluding ``n_excluded``.

    With exact search this makes the merge equal to the global top-``n`` by best score: an
    item in that top-``n`` has fewer than ``n`` kept items and at most ``n_excluded`` excluded
    ones above it in the list of the interest that scores it best.
    """
    return n + n_excluded


def active_interests(vectors: np.ndarray) -> np.ndarray:
    """bool [k]: interests that can retrieve anything (finite and not all zero)."""
    v = np.asarray(vectors)
    return np.isfinite(v).all(axis=1) & (np.abs(v).sum(axis=1) > 0)


def merge_candidates(
    rows: np.ndarray,
    scores: np.ndarray,
    active: np.ndarray,
    n: int,
    exclude: Collection[int] = frozenset(),
) -> list[Candidate]:
    """Merge per-interest search results into at most ``n`` candidates, best score first.

    ``rows`` and ``scores`` are [K, N] as an index search returns them (row -1 = no result);
    ``active`` is bool [K]; ``exclude`` holds rows never to return. Ties keep the earlier
    interest and the earlier rank, so the result is deterministic.
    """
    rows = np.asarray(rows)
    scores = np.asarray(scores)
    active = np.asarray(active, dtype=bool)
    if rows.shape != scores.shape or rows.ndim != 2 or active.shape != (rows.shape[0],):
        raise ValueError(
            f"rows {rows.shape}, scores {scores.shape}, active {active.shape}: expected "
            "rows and scores [K, N] and active [K]"
        )
    if n <= 0 or rows.size == 0:
        return []
    found = (rows >= 0) & active[:, None]
    flat_rows = rows[found]
    flat_scores = scores[found]
    # Row-major positions of the found entries: their interest is the row of ``rows``.
    flat_interest = np.nonzero(found)[0]
    # Stable sort on the negated score: equal scores keep row-major (interest, rank) order, so
    # the first time an item comes up in this order is its best score (earliest interest).
    order = np.argsort(-flat_scores, kind="stable")
    # Plain Python over the few hundred entries, stopping at ``n``: cheaper than numpy's
    # unique-and-sort for arrays this small.
    merged: list[Candidate] = []
    append = merged.append
    seen: set[int] = set()
    mark = seen.add
    for row, score, interest in zip(
        flat_rows[order].tolist(),
        flat_scores[order].tolist(),
        flat_interest[order].tolist(),
        strict=True,
    ):
        if row in seen:
            continue
        mark(row)
        if row in exclude:
            continue
        append(Candidate(row, score, interest))
        if len(merged) == n:
            break
    return merged


def controllable_aggregate(
    candidates: Sequence[Candidate],
    categories: Sequence[int] | np.ndarray,
    n: int,
    diversity: float,
) -> list[Candidate]:
    """ComiRec's controllable aggregation: pick ``n`` of ``candidates`` greedily, each step
    taking the candidate that maximises ``(1 - λ) * score - λ * (picked items of its
    category)``, with ``λ = diversity`` in [0, 1].

    ComiRec (Cen et al., KDD 2020) maximises ``Σ f(u, i) + c · Σ_{i,j} δ(cat(i) ≠ cat(j))``
    greedily; picking by ``score - c · same-category count`` is the same greedy step, and
    ``c = λ / (1 - λ)`` maps its unbounded factor onto [0, 1]: λ = 0 is the plain best-score
    merge, λ = 1 orders by category spread alone (score breaks ties). ``categories[row]`` is
    the category of bundle row ``row``. Ties keep the earlier candidate, so it is
    deterministic.
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity λ must be in [0, 1]; got {diversity}")
    pool = list(candidates)
    if n <= 0 or not pool:
        return []
    if diversity == 0.0:
        return sorted(pool, key=lambda c: -c.score)[:n]
    cats = np.asarray(categories)
    scores = np.array([c.score for c in pool], dtype=np.float64)
    pool_cats = cats[np.array([c.row for c in pool], dtype=np.int64)]
    _, cat_index = np.unique(pool_cats, return_inverse=True)
    picked_per_cat = np.zeros(int(cat_index.max()) + 1, dtype=np.float64)
    taken = np.zeros(len(pool), dtype=bool)
    chosen: list[Candidate] = []
    for _ in range(min(n, len(pool))):
        value = (1.0 - diversity) * scores - diversity * picked_per_cat[cat_index]
        value[taken] = -np.inf
        best = int(np.argmax(value))  # first maximum: the earlier candidate wins ties
        taken[best] = True
        picked_per_cat[cat_index[best]] += 1
        chosen.append(pool[best])
    return chosen


def category_diversity(
    rows: Sequence[int] | np.ndarray, categories: Sequence[int] | np.ndarray
) -> float:
    """ComiRec's Diversity@N of one list: the share of item pairs whose categories differ
    (0 for fewer than two items)."""
    cats = np.asarray(categories)[np.asarray(rows, dtype=np.int64)]
    m = len(cats)
    if m < 2:
        return 0.0
    _, counts = np.unique(cats, return_counts=True)
    same = float((counts * (counts - 1)).sum()) / 2.0
    pairs = m * (m - 1) / 2.0
    return 1.0 - same / pairs
