"""What interests capture, checked on item tables whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from mindstream.app.report_interests import (
    MIN_PLANTED_BEHAVIOURS,
    InterestView,
    UserView,
    category_means,
    count_categories,
    item_category_names,
    match_planted,
    top_rows,
    user_views,
    view_interests,
    window_overlap,
)
from model_export.data.synthetic import SyntheticConfig, category_name, generate


def clustered_table(n_clusters=4, per_cluster=30, dim=8, seed=0):
    """Items of cluster c lie near axis c: an interest along axis c retrieves only cluster c."""
    rng = np.random.default_rng(seed)
    rows, categories = [], []
    for c in range(n_clusters):
        base = np.zeros(dim, dtype=np.float32)
        base[c] = 1.0
        rows.append(base + 0.05 * rng.standard_normal((per_cluster, dim)).astype(np.float32))
        categories += [f"c{c}"] * per_cluster
    return np.concatenate(rows), categories


def test_top_rows_match_a_brute_force_sort():
    rng = np.random.default_rng(1)
    items = rng.standard_normal((50, 6)).astype(np.float32)
    vectors = rng.standard_normal((3, 6)).astype(np.float32)
    rows = top_rows(vectors, items, 7)
    for j, v in enumerate(vectors):
        scores = [float(items[r] @ v) for r in range(50)]
        expected = sorted(range(50), key=lambda r: -scores[r])[:7]
        assert list(rows[j]) == expected


def test_interests_along_cluster_axes_capture_their_cluster():
    items, categories = clustered_table()
    vectors = np.eye(8, dtype=np.float32)[[2, 0]] * 3.0
    views = view_interests(vectors, items, categories, means=category_means(items, categories))
    assert [v.categories for v in views] == [[("c2", 20)], [("c0", 20)]]
    assert [v.closest for v in views] == ["c2", "c0"]
    assert all(v.cosine > 0.99 for v in views)
    # Half-way between two clusters: top items from both, nearest mean one of them.
    mixed = view_interests(np.array([[1, 1, 0, 0, 0, 0, 0, 0]], np.float32), items, categories)
    assert {c for c, _ in mixed[0].categories} <= {"c0", "c1"}
    assert sum(n for _, n in mixed[0].categories) == 20


def test_count_categories_orders_by_count_then_name():
    assert count_categories(["b", "a", None, "b", "a", "c"]) == [
        ("a", 2),
        ("b", 2),
        ("(none)", 1),
        ("c", 1),
    ]


def user(planted, window, majorities):
    return UserView(
        "u",
        window,
        [InterestView([(m, 20)]) for m in majorities],
        planted,
    )


def test_match_counts_planted_interests_with_enough_behaviours():
    few = MIN_PLANTED_BEHAVIOURS - 1
    users = [
        user(["c0", "c1"], [("c0", 10), ("c1", 10)], ["c0", "c1", "c0"]),  # 2 of 2
        user(["c2", "c3"], [("c2", 10), ("c3", few)], ["c2", "c2"]),  # 1 of 1 (+ c3 small)
        user(["c0", "c3"], [("c0", 10), ("c3", 10)], ["c1", "c2"]),  # 0 of 2
        user(["c1"], [("c1", 30)], ["c1"]),  # single-interest users are left out
    ]
    summary = match_planted(users, ["c0", "c1", "c2", "c3"])
    assert summary.users == 3
    assert (summary.recovered, summary.planted) == (3, 5)
    assert (summary.recovered_all, summary.planted_all) == (3, 6)
    assert summary.share == pytest.approx(0.6)
    # Third user's interests own c1/c2, which it was not planted with: chance sees them.
    assert 0.0 <= summary.chance <= 1.0
    assert UserView.from_json(users[0].to_json()) == users[0]


def test_window_overlap():
    users = [user(None, [("a", 3)], ["a", "b"]), user(None, [("b", 1)], ["b"])]
    assert window_overlap(users) == pytest.approx(2 / 3)


def test_synthetic_categories_and_views_from_data():
    data, truth = generate(SyntheticConfig(n_users=30, n_items=40, n_clusters=4, seed=2))
    names = item_category_names(data, {"category": [category_name(c) for c in range(4)]})
    for index, item in enumerate(data.item_ids, start=1):
        assert names[item] == f"c{truth.item_cluster[index]}"
    # Item table = one-hot of each item's cluster: an interest at cluster c owns c.
    items = np.eye(4, dtype=np.float32)[truth.item_cluster[1:]]
    views = user_views(
        ["u1"],
        [[data.item_ids[i - 1] for i in data.sequences[0]]],
        [np.eye(4, dtype=np.float32)[[3]]],
        data.item_ids,
        items,
        names,
        planted=[["c3"]],
        top=5,
    )
    assert views[0].interests[0].categories == [("c3", 5)]
    assert views[0].interests[0].closest == "c3"
    assert sum(n for _, n in views[0].window) == len(data.sequences[0])
