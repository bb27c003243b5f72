"""ComiRec's controllable aggregation and the category diversity of a list."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall.merge import Candidate, category_diversity, controllable_aggregate


def pool(scores):
    return [Candidate(row, float(score), 0) for row, score in enumerate(scores)]


def test_zero_diversity_is_the_best_score_merge():
    candidates = pool([0.3, 0.9, 0.5, 0.7])
    picked = controllable_aggregate(candidates, [0, 0, 0, 0], 3, 0.0)
    assert [c.row for c in picked] == [1, 3, 2]


def test_diversity_trades_score_for_new_categories():
    # rows 0-2 are category 0 and score highest; row 3 is the only category-1 item.
    candidates = pool([1.0, 0.99, 0.98, 0.5])
    categories = [0, 0, 0, 1]
    assert [c.row for c in controllable_aggregate(candidates, categories, 2, 0.0)] == [0, 1]
    # λ = 0.5: the second pick compares 0.5 * 0.99 - 0.5 * 1 with 0.5 * 0.5 - 0.
    assert [c.row for c in controllable_aggregate(candidates, categories, 2, 0.5)] == [0, 3]


def test_full_diversity_spreads_categories_and_breaks_ties_by_order():
    candidates = pool([0.9, 0.8, 0.7, 0.6])
    picked = controllable_aggregate(candidates, [0, 0, 1, 1], 4, 1.0)
    assert [c.row for c in picked] == [0, 2, 1, 3]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_diversity_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        controllable_aggregate(pool([1.0]), [0], 1, bad)


def test_category_diversity_is_the_share_of_pairs_that_differ():
    assert category_diversity([0, 1, 2], [5, 5, 5]) == 0.0
    assert category_diversity([0, 1, 2], [1, 2, 3]) == 1.0
    assert category_diversity([0, 1, 2, 3], [1, 1, 2, 2]) == pytest.approx(4 / 6)
    assert category_diversity([0], [1]) == 0.0


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=12),
    n=st.integers(1, 12),
    lam=st.floats(0, 1),
    seed=st.integers(0, 100),
)
def test_greedy_matches_a_step_by_step_reference(scores, n, lam, seed):
    categories = np.random.default_rng(seed).integers(0, 3, size=len(scores))
    candidates = pool(scores)
    picked = controllable_aggregate(candidates, categories, n, lam)
    assert len(picked) == min(n, len(scores))
    assert len({c.row for c in picked}) == len(picked)
    left = list(candidates)
    counts: dict[int, int] = {}
    for c in picked:
        values = [(1 - lam) * x.score - lam * counts.get(int(categories[x.row]), 0) for x in left]
        assert (1 - lam) * c.score - lam * counts.get(int(categories[c.row]), 0) == max(values)
        counts[int(categories[c.row])] = counts.get(int(categories[c.row]), 0) + 1
        left.remove(c)
    # More λ never lowers the list's diversity against λ = 0 at the same length.
    plain = controllable_aggregate(candidates, categories, n, 0.0)
    if lam == 1.0:
        rows = [c.row for c in picked]
        assert (
            category_diversity(rows, categories)
            >= category_diversity([c.row for c in plain], categories) - 1e-12
        )


def scan_reference(candidates, categories, n, diversity):
    """The greedy step as a full scan of the pool per pick (first maximum wins)."""
    cats = np.asarray(categories)[[c.row for c in candidates]]
    scores = np.array([c.score for c in candidates], dtype=np.float64)
    picked: dict[int, float] = {}
    taken = np.zeros(len(candidates), dtype=bool)
    chosen = []
    for _ in range(min(n, len(candidates))):
        penalty = np.array([picked.get(int(c), 0.0) for c in cats])
        value = (1.0 - diversity) * scores - diversity * penalty
        value[taken] = -np.inf
        best = int(np.argmax(value))
        taken[best] = True
        picked[int(cats[best])] = picked.get(int(cats[best]), 0.0) + 1
        chosen.append(candidates[best])
    return chosen


@pytest.mark.parametrize("seed", range(40))
def test_the_heap_picks_what_a_scan_of_the_pool_picks_ties_included(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 300))
    # Few distinct scores and categories: many ties within and across categories.
    scores = rng.choice(np.linspace(-1, 1, 7), size=size)
    rows = rng.permutation(1000)[:size]
    candidates = [
        Candidate(int(r), float(s), int(rng.integers(0, 4)))
        for r, s in zip(rows, scores, strict=True)
    ]
    categories = rng.integers(0, int(rng.integers(1, 20)), size=1000)
    for lam in (0.0, 0.01, 0.05, 0.3, 0.5, 0.9, 1.0):
        n = int(rng.integers(1, 80))
        expected = scan_reference(candidates, categories, n, lam)
        assert controllable_aggregate(candidates, categories, n, lam) == expected
