"""The candidate merge against a brute-force reference over full score matrices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall.merge import Candidate, active_interests, merge_candidates, search_width


def per_interest_top(score_matrix: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """What an exact index returns: each interest's top-``width`` rows, padded with -1."""
    k, m = score_matrix.shape
    order = np.argsort(-score_matrix, axis=1, kind="stable")[:, :width]
    scores = np.take_along_axis(score_matrix, order, axis=1)
    if width > m:
        pad = width - m
        order = np.hstack([order, -np.ones((k, pad), dtype=order.dtype)])
        scores = np.hstack([scores, np.full((k, pad), -np.inf, dtype=scores.dtype)])
    return scores, order


def brute_force(score_matrix, active, n, exclude):
    """The global top-``n`` unseen items by their best score over active interests."""
    best = {}
    for interest in np.flatnonzero(active):
        for row, score in enumerate(score_matrix[interest]):
            if row in exclude:
                continue
            if row not in best or score > best[row][0]:
                best[row] = (float(score), int(interest))
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:n]
    return [Candidate(row, score, interest) for row, (score, interest) in ranked]


@st.composite
def cases(draw):
    k = draw(st.integers(1, 6))
    m = draw(st.integers(1, 40))
    # Distinct scores: the reference and the merge then agree on one order.
    values = draw(
        st.lists(
            st.floats(-100, 100, allow_nan=False, width=32),
            min_size=k * m,
            max_size=k * m,
            unique=True,
        )
    )
    score_matrix = np.array(values, dtype=np.float32).reshape(k, m)
    active = np.array(draw(st.lists(st.booleans(), min_size=k, max_size=k)))
    n = draw(st.integers(1, m + 3))
    exclude = set(draw(st.lists(st.integers(0, m - 1), max_size=m)))
    return score_matrix, active, n, exclude


@settings(max_examples=300, deadline=None)
@given(cases())
def test_merge_equals_brute_force_over_exact_results(case):
    score_matrix, active, n, exclude = case
    scores, rows = per_interest_top(score_matrix, search_width(n, len(exclude)))
    merged = merge_candidates(rows, scores, active, n, exclude)
    assert merged == brute_force(score_matrix, active, n, exclude)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_merge_invariants_on_truncated_results(case):
    # With lists shorter than the search width the merge cannot be the global top-n, but it
    # must still be unique, sorted, unseen, from active interests, and each score the best seen.
    score_matrix, active, n, exclude = case
    scores, rows = per_interest_top(score_matrix, max(1, score_matrix.shape[1] // 2))
    merged = merge_candidates(rows, scores, active, n, exclude)
    assert len(merged) <= n
    assert len({c.row for c in merged}) == len(merged)
    assert [c.score for c in merged] == sorted((c.score for c in merged), reverse=True)
    for c in merged:
        assert c.row not in exclude
        assert active[c.interest]
        assert c.score == score_matrix[c.interest, c.row]
        seen = [score_matrix[i, c.row] for i in np.flatnonzero(active) if c.row in rows[i]]
        assert c.score == max(seen)


def test_ties_keep_the_earlier_interest_and_rank():
    rows = np.array([[3, 1, 2], [1, 3, 4]])
    scores = np.array([[5.0, 4.0, 4.0], [5.0, 5.0, 4.0]], dtype=np.float32)
    merged = merge_candidates(rows, scores, np.array([True, True]), 10)
    assert merged == [
        Candidate(3, 5.0, 0),
        Candidate(1, 5.0, 1),
        Candidate(2, 4.0, 0),
        Candidate(4, 4.0, 1),
    ]


def test_padding_rows_and_inactive_interests_are_ignored():
    rows = np.array([[7, -1, -1], [8, 9, 10]])
    scores = np.array([[1.0, -np.inf, -np.inf], [9.0, 8.0, 7.0]], dtype=np.float32)
    assert merge_candidates(rows, scores, np.array([True, False]), 5) == [Candidate(7, 1.0, 0)]
    assert merge_candidates(rows, scores, np.array([False, False]), 5) == []
    assert merge_candidates(rows, scores, np.array([True, True]), 0) == []


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="expected rows and scores"):
        merge_candidates(np.zeros((2, 3), int), np.zeros((2, 4)), np.ones(2, bool), 3)
    with pytest.raises(ValueError, match="active"):
        merge_candidates(np.zeros((2, 3), int), np.zeros((2, 3)), np.ones(3, bool), 3)


def test_active_interests_skips_zero_and_non_finite_vectors():
    v = np.array([[1.0, 0.0], [0.0, 0.0], [np.nan, 1.0], [-2.0, 3.0]], dtype=np.float32)
    assert active_interests(v).tolist() == [True, False, False, True]
