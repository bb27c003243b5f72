"""Candidate merge as MIND is served: every active interest retrieves its top-N items, the union
is de-duplicated keeping each item's best score (and the interest that found it), items the
user has already seen are left out, and the best ``n`` are returned; optionally ComiRec's
controllable aggregation trades score for category diversity. Pure functions, no I/O.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

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

    The penalty is the same for every candidate of one category, so only the best remaining
    candidate of each category can win a step, and a pick changes only its own category's
    value: one heap entry per category makes a step O(log categories) instead of a pass over
    the pool (a served request picks 50 of a few hundred).
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity λ must be in [0, 1]; got {diversity}")
    pool = list(candidates)
    if n <= 0 or not pool:
        return []
    if diversity == 0.0:
        return sorted(pool, key=lambda c: -c.score)[:n]
    keep = 1.0 - diversity
    cats = np.asarray(categories)[np.array([c.row for c in pool], dtype=np.int64)].tolist()
    scores = [c.score for c in pool]
    # Each category's candidates in the order the greedy step takes them: best value first
    # (the penalty is shared), the earlier candidate first among equal values. A pool sorted
    # by score (what the merge returns) is already in that order.
    order: Sequence[int] = range(len(pool))
    if any(a < b for a, b in itertools.pairwise(scores)):
        order = sorted(order, key=lambda i: (-(keep * scores[i]), i))
    queues: dict[Any, list[int]] = {}
    for position in order:
        queues.setdefault(cats[position], []).append(position)
    heads = {cat: 0 for cat in queues}
    counts = dict.fromkeys(queues, 0.0)
    # Entries (-value, position, category) of each category's best remaining candidate: the
    # smallest is the step's first maximum, as a scan of the pool would find it.
    heap = [(-(keep * pool[q[0]].score), q[0], cat) for cat, q in queues.items()]
    heapq.heapify(heap)
    chosen: list[Candidate] = []
    while heap and len(chosen) < n:
        _, position, cat = heapq.heappop(heap)
        chosen.append(pool[position])
        counts[cat] += 1.0
        heads[cat] += 1
        queue = queues[cat]
        if heads[cat] < len(queue):
            nxt = queue[heads[cat]]
            value = keep * pool[nxt].score - diversity * counts[cat]
            heapq.heappush(heap, (-value, nxt, cat))
    return chosen


def category_codes(labels: Sequence[str]) -> np.ndarray:
    """int64 [items]: one code per distinct category label. An item without a category (an
    empty label) gets a code of its own, so items of unknown category never count as the same
    category as each other."""
    codes: dict[str, int] = {}
    out = np.empty(len(labels), dtype=np.int64)
    unknown = len(labels)  # above every label's code (there are at most len(labels) labels)
    for row, label in enumerate(labels):
        if label:
            out[row] = codes.setdefault(label, len(codes))
        else:
            out[row] = unknown + row
    return out


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
