"""Ranking metrics on hand-checked toy cases."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.metrics import hit_rate_curve, ranking_metrics, relevance

LOG2_3 = np.log2(3.0)


def test_toy_case_by_hand() -> None:
    retrieved = np.array([[5, 3, 9, 0], [1, 2, 4, 0], [8, 6, 7, 2]])
    targets = [np.array([3]), np.array([4, 7, 4]), np.array([1])]
    rel, n_targets = relevance(retrieved, targets)
    assert rel.tolist() == [
        [False, True, False, False],
        [False, False, True, False],
        [False, False, False, False],
    ]
    assert n_targets.tolist() == [1, 2, 1]  # the repeated target 4 counts once
    m = ranking_metrics(rel, n_targets, [1, 2, 3])
    assert m["hit_rate@1"] == 0.0
    assert m["hit_rate@2"] == pytest.approx(1 / 3)
    assert m["hit_rate@3"] == pytest.approx(2 / 3)
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx((1 + 0.5 + 0) / 3)
    # user 0: hit at rank 2 -> 1/log2(3); user 1: hit at rank 3 over ideal for 2 targets
    assert m["ndcg@2"] == pytest.approx((1 / LOG2_3) / 3)
    assert m["ndcg@3"] == pytest.approx((1 / LOG2_3 + 0.5 / (1 + 1 / LOG2_3)) / 3)


def test_multi_target_ndcg_ideal_is_capped_at_n() -> None:
    rel, n_targets = relevance(np.array([[1, 2, 3]]), [np.array([1, 2, 3, 4, 5])])
    m = ranking_metrics(rel, n_targets, [1, 2])
    assert m["ndcg@1"] == 1.0 and m["ndcg@2"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(2 / 5)


def test_hit_rate_curve_matches_the_metric() -> None:
    rng = np.random.default_rng(0)
    retrieved = np.array([rng.permutation(60)[:30] + 1 for _ in range(100)])
    targets = [rng.integers(1, 61, size=rng.integers(1, 4)) for _ in range(100)]
    rel, n_targets = relevance(retrieved, targets)
    curve = hit_rate_curve(rel)
    m = ranking_metrics(rel, n_targets, range(1, 31))
    assert curve.tolist() == pytest.approx([m[f"hit_rate@{n}"] for n in range(1, 31)])
    assert (np.diff(curve) >= 0).all()


def test_pad_slot_is_never_a_hit_and_bad_inputs_raise() -> None:
    rel, _ = relevance(np.array([[0, 0]]), [np.array([0])])
    assert not rel.any()
    rel, n_targets = relevance(np.array([[1, 2]]), [np.array([1])])
    with pytest.raises(ValueError, match="exceed"):
        ranking_metrics(rel, n_targets, [3])
    with pytest.raises(ValueError, match="at least one target"):
        ranking_metrics(*relevance(np.array([[1]]), [np.array([], dtype=np.int64)]), [1])
    with pytest.raises(ValueError, match="does not match"):
        relevance(np.array([[1]]), [])


def test_a_negative_empty_slot_never_matches_another_users_target() -> None:
    # The retrieval's NO_ID (-1) pads lists shorter than N (a corpus smaller than N). Keyed as
    # user * stride + item (stride 5), user 1's -1 would land on user 0's item 4, a target.
    retrieved = np.array([[4, 1, -1], [2, -1, -1]])
    rel, n_targets = relevance(retrieved, [np.array([4]), np.array([2, 3])])
    assert rel.tolist() == [[True, False, False], [True, False, False]]
    m = ranking_metrics(rel, n_targets, [3])
    assert m["recall@3"] == pytest.approx((1 + 0.5) / 2)
