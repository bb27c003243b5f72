"""Candidates from an exact index equal the brute-force merge over all items."""

from __future__ import annotations

import numpy as np

from mindstream.settings import Settings
from recall.candidates import Query, recall_many, recall_one
from recall.index import open_index
from recall.merge import Candidate


def brute_force(embeddings, vectors, n, exclude_rows):
    scores = vectors @ embeddings.T  # [k, items]
    active = np.abs(vectors).sum(1) > 0
    best = np.where(active[:, None], scores, -np.inf)
    best_score = best.max(0)
    best_interest = best.argmax(0)
    order = [r for r in np.argsort(-best_score, kind="stable") if r not in exclude_rows][:n]
    return [Candidate(int(r), float(best_score[r]), int(best_interest[r])) for r in order]


def assert_same(got, want):
    assert [(c.row, c.interest) for c in got] == [(c.row, c.interest) for c in want]
    np.testing.assert_allclose([c.score for c in got], [c.score for c in want], rtol=1e-5)


def test_batch_of_users_equals_brute_force(make_bundle):
    rng = np.random.default_rng(21)
    embeddings = rng.standard_normal((3000, 16)).astype(np.float32)
    item_index = open_index(make_bundle(embeddings), Settings(), progress=False)
    queries = []
    for u in range(12):
        k = 1 + u % 4
        vectors = rng.standard_normal((k, 16)).astype(np.float32)
        if k > 2:
            vectors[1] = 0.0  # an inactive interest in the middle
        # Exclude some of the user's own best items, and an id the bundle does not know.
        top = np.argsort(-(vectors @ embeddings.T).max(0))[: 3 * u]
        queries.append(Query(vectors, 5 + u, tuple([f"i{r}" for r in top] + ["unknown"])))
    results = recall_many(item_index, queries)
    for query, got in zip(queries, results, strict=True):
        exclude = {int(i[1:]) for i in query.exclude_items if i != "unknown"}
        want = brute_force(embeddings, query.vectors, query.n, exclude)
        assert len(got) == query.n
        assert_same(got, want)
        assert all(query.vectors[c.interest].any() for c in got)


def test_single_user_and_edge_cases(make_bundle):
    rng = np.random.default_rng(4)
    embeddings = rng.standard_normal((50, 8)).astype(np.float32)
    item_index = open_index(make_bundle(embeddings), Settings(), progress=False)
    vectors = rng.standard_normal((2, 8)).astype(np.float32)
    assert_same(recall_one(item_index, vectors, 7), brute_force(embeddings, vectors, 7, set()))
    # Asking for more than the catalogue returns all of it, once.
    everything = recall_one(item_index, vectors, 500)
    assert sorted(c.row for c in everything) == list(range(50))
    assert recall_one(item_index, np.zeros((3, 8), np.float32), 5) == []
    assert recall_many(item_index, []) == []
