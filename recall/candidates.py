"""Candidates for users' interest vectors from an item index: one Faiss search for all the
interests of one or many users, then the per-user merge. No I/O beyond the index."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from recall.index import ItemIndex
from recall.merge import Candidate, active_interests, merge_candidates, search_width


@dataclass(frozen=True)
class Query:
    """One user's request: interest vectors float32 [k, dim], items to leave out, how many."""

    vectors: np.ndarray
    n: int
    exclude_items: Sequence[str] = ()


def recall_many(index: ItemIndex, queries: Sequence[Query]) -> list[list[Candidate]]:
    """Candidates for each query, searching every active interest of every query at once."""
    if not queries:
        return []
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
        merged = merge_candidates(rows[part], scores[part], np.ones(count, bool), query.n, exclude)
        results.append(_renumber(merged, np.flatnonzero(active)))
    return results


def recall_one(
    index: ItemIndex, vectors: np.ndarray, n: int, exclude_items: Iterable[str] = ()
) -> list[Candidate]:
    """Candidates for one user's interest vectors."""
    return recall_many(index, [Query(vectors, n, tuple(exclude_items))])[0]


def _renumber(candidates: list[Candidate], interest_of: np.ndarray) -> list[Candidate]:
    # Inactive interests were not searched: map positions among the active ones back.
    if len(interest_of) and interest_of[-1] == len(interest_of) - 1:
        return candidates
    return [Candidate(c.row, c.score, int(interest_of[c.interest])) for c in candidates]
