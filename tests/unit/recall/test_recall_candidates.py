"""Candidates from an exact index equal the brute-force merge over all items."""

from __future__ import annotations

import numpy as np
import pytest

from mindstream.settings import Settings
from recall.candidates import Query, recall_many, recall_one
from recall.exceptions import DiversityUnavailable
from recall.index import open_index
from recall.merge import Candidate, category_codes, controllable_aggregate


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


def exact_pool(embeddings, vectors, width, exclude_rows):
    """Every active interest's exact top-``width`` rows, de-duplicated by best score (first
    interest on ties), seen rows left out, best score first."""
    best: dict[int, Candidate] = {}
    for k, v in enumerate(vectors):
        if not np.abs(v).sum() > 0:
            continue
        scores = embeddings @ v
        for r in np.argsort(-scores, kind="stable")[:width]:
            c = Candidate(int(r), float(scores[r]), k)
            if int(r) not in best or c.score > best[int(r)].score:
                best[int(r)] = c
    pool = [c for r, c in best.items() if r not in exclude_rows]
    return sorted(pool, key=lambda c: -c.score)


def test_a_diversity_query_aggregates_the_merged_pool_by_category(make_bundle):
    rng = np.random.default_rng(9)
    embeddings = rng.standard_normal((2000, 16)).astype(np.float32)
    labels = ["" if i % 11 == 0 else f"c{i % 6}" for i in range(2000)]
    item_index = open_index(
        make_bundle(embeddings, item_categories=labels), Settings(), progress=False
    )
    codes = item_index.categories
    assert codes is not None
    for u in range(8):
        vectors = rng.standard_normal((1 + u % 4, 16)).astype(np.float32)
        top = np.argsort(-(vectors @ embeddings.T).max(0))[:u]
        query = Query(vectors, 10 + u, tuple(f"i{r}" for r in top), diversity=0.1 * u)
        (got,) = recall_many(item_index, [query])
        width = query.n + len(top)
        pool = exact_pool(embeddings, vectors, width, {int(r) for r in top})
        want = controllable_aggregate(pool, codes, query.n, query.diversity)
        assert_same(got, want)
        if u == 0:  # λ = 0 is the plain merge
            assert_same(got, brute_force(embeddings, vectors, query.n, set()))
    # At λ = 1 the first picks spread over distinct categories.
    vectors = rng.standard_normal((2, 16)).astype(np.float32)
    spread = recall_one(item_index, vectors, 6, diversity=1.0)
    assert len({labels[c.row] for c in spread}) == 6


def test_a_diversity_query_on_a_bundle_without_categories_is_refused(make_bundle):
    embeddings = np.random.default_rng(1).standard_normal((100, 8)).astype(np.float32)
    item_index = open_index(make_bundle(embeddings), Settings(), progress=False)
    assert item_index.categories is None
    vectors = np.ones((1, 8), np.float32)
    assert len(recall_one(item_index, vectors, 5, diversity=0.0)) == 5
    with pytest.raises(DiversityUnavailable, match="carries no item categories"):
        recall_one(item_index, vectors, 5, diversity=0.2)


def test_category_codes_keep_unknown_categories_apart():
    codes = category_codes(["a", "", "b", "a", ""])
    assert codes[0] == codes[3] and codes[0] != codes[2]
    assert len({codes[1], codes[4], codes[0], codes[2]}) == 4
