"""Candidates for users' interest vectors from an item index: one Faiss search for all the
interests of one or many users, then the per-user merge (best score first, or ComiRec's
diversity-aware aggregation of the merged pool when a query asks for it). No I/O beyond the
index."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from recall.exceptions import DiversityUnavailable
from recall.index import ItemIndex
from recall.merge import (
    Candidate,
    active_interests,
    controllable_aggregate,
    merge_candidates,
    search_width,
)


@dataclass(frozen=True)
class Query:
    """One user's request: interest vectors float32 [k, dim], items to leave out, how many,
    and the diversity λ of the merge (0 = best score first)."""

    vectors: np.ndarray
    n: int
    exclude_items: Sequence[str] = ()
    diversity: float = 0.0


def recall_many(index: ItemIndex, queries: Sequence[Query]) -> list[list[Candidate]]:
    """Candidates for each query, searching every active interest of every query at once."""
    if not queries:
        return []
    if index.categories is None and any(q.diversity > 0 for q in queries):
        raise DiversityUnavailable(index.version)
    excluded = [index.rows_of(q.exclude_items) for q in queries]
    actives = [active_interests(q.vectors) for q in queries]
    width = min(
        index.n_items,
        max(search_width(q.n, len(ex)) for q, ex in zip(queries, excluded, strict=True)),
    )
    stacked = [
        np.asarray(q.vectors, dtype=np.float32)[a] for q, a in zip(queries, actives, strict=True)
    ]
    counts = [len(v) for v in stacked]
    if sum(counts) == 0 or index.n_items == 0:
        return [[] for _ in queries]
    scores, rows = index.search(np.concatenate(stacked), width)
    results: list[list[Candidate]] = []
    start = 0
    for query, active, exclude in zip(queries, actives, excluded, strict=True):
        count = int(active.sum())
        part = slice(start, start + count)
        start += count
        if query.diversity > 0 and index.categories is not None:
            # The pool is every searched interest's list, de-duplicated by best score.
            pool = merge_candidates(
                rows[part], scores[part], np.ones(count, bool), rows[part].size, exclude
            )
            merged = controllable_aggregate(pool, index.categories, query.n, query.diversity)
        else:
            merged = merge_candidates(
                rows[part], scores[part], np.ones(count, bool), query.n, exclude
            )
        results.append(_renumber(merged, np.flatnonzero(active)))
    return results


def recall_one(
    index: ItemIndex,
    vectors: np.ndarray,
    n: int,
    exclude_items: Iterable[str] = (),
    diversity: float = 0.0,
) -> list[Candidate]:
    """Candidates for one user's interest vectors."""
    return recall_many(index, [Query(vectors, n, tuple(exclude_items), diversity)])[0]


def _renumber(candidates: list[Candidate], interest_of: np.ndarray) -> list[Candidate]:
    # Inactive interests were not searched: map positions among the active ones back.
    if len(interest_of) and interest_of[-1] == len(interest_of) - 1:
        return candidates
    return [Candidate(c.row, c.score, int(interest_of[c.interest])) for c in candidates]
