"""Synthetic generator: determinism, planted truth, and the click-event replay."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.data.events import iter_click_events
from model_export.data.synthetic import SyntheticConfig, click_events, generate
from model_export.dataset import Interactions, PlantedTruth, item_category_labels

Generated = tuple[Interactions, PlantedTruth]

SMALL = SyntheticConfig(n_users=300, n_items=200, n_clusters=10, max_interests=4, noise=0.1, seed=7)


@pytest.fixture(scope="module")
def generated() -> tuple[Interactions, PlantedTruth]:
    return generate(SMALL)


def test_same_seed_same_data_other_seed_other_data(generated: Generated) -> None:
    data, truth = generated
    again, truth_again = generate(SMALL)
    assert all(np.array_equal(a, b) for a, b in zip(data.sequences, again.sequences, strict=True))
    assert data.timestamps is not None and again.timestamps is not None
    assert all(np.array_equal(a, b) for a, b in zip(data.timestamps, again.timestamps, strict=True))
    assert np.array_equal(truth.item_cluster, truth_again.item_cluster)
    other, _ = generate(SyntheticConfig(**{**SMALL.__dict__, "seed": 8}))
    assert any(
        not np.array_equal(a, b) for a, b in zip(data.sequences, other.sequences, strict=False)
    )


def test_shape_and_features(generated: Generated) -> None:
    data, truth = generated
    assert (data.n_users, data.n_items) == (300, 200)
    lengths = [len(s) for s in data.sequences]
    assert min(lengths) >= SMALL.min_len and max(lengths) <= SMALL.max_len
    assert all(s.min() >= 1 and s.max() <= 200 for s in data.sequences)
    assert truth.item_cluster[0] == -1
    assert sorted(np.bincount(truth.item_cluster[1:]).tolist()) == [20] * 10
    # items of a cluster share its category (feature id = cluster + 1)
    assert np.array_equal(data.item_features["category"][1:, 0], truth.item_cluster[1:] + 1)
    assert data.feature_sizes["category"] == 11
    assert data.timestamps is not None
    assert all((np.diff(t) >= 1).all() for t in data.timestamps)


def test_planted_truth_is_consistent(generated: Generated) -> None:
    data, truth = generated
    counts = [len(c) for c in truth.user_clusters]
    assert min(counts) == 1 and max(counts) == SMALL.max_interests
    assert 0.1 < counts.count(1) / len(counts) < 0.45  # single_interest_share = 0.25
    in_planted = total = 0
    for seq, clusters in zip(data.sequences, truth.user_clusters, strict=True):
        item_clusters = truth.item_cluster[seq]
        assert set(clusters) <= set(item_clusters.tolist())  # every interest shows up
        in_planted += int(np.isin(item_clusters, clusters).sum())
        total += len(seq)
    # noise = 0.1 draws from the whole catalogue, so ~90%+ of behaviours are on-interest
    assert 0.88 < in_planted / total < 0.97


def test_multi_interest_users_interleave_their_clusters(generated: Generated) -> None:
    data, truth = generated
    switches = []
    for seq, clusters in zip(data.sequences, truth.user_clusters, strict=True):
        if len(clusters) >= 2:
            labels = truth.item_cluster[seq]
            switches.append(int((labels[1:] != labels[:-1]).sum()))
    assert np.mean(switches) > 5  # runs alternate, not one block per cluster


def test_click_events_in_global_time_order(generated: Generated) -> None:
    data, truth = generated
    events = list(click_events(data))
    assert len(events) == data.n_interactions
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    first = events[0]
    assert set(first) == {"user_id", "item_id", "ts", "event", "category"}
    assert first["user_id"].startswith("u") and first["item_id"].startswith("i")
    by_user: dict[str, list[str]] = {}
    for e in events:
        item = int(e["item_id"][1:])
        assert e["category"] == f"c{truth.item_cluster[item]}"
        by_user.setdefault(e["user_id"], []).append(e["item_id"])
    for u, user in enumerate(data.users):
        assert by_user[user] == [data.item_ids[i - 1] for i in data.sequences[u]]


def test_events_need_timestamps(generated: Generated) -> None:
    from dataclasses import replace

    data, _ = generated
    with pytest.raises(ValueError, match="no timestamps"):
        next(iter_click_events(replace(data, timestamps=None)))


def test_invalid_config() -> None:
    with pytest.raises(ValueError, match="min_len"):
        generate(SyntheticConfig(max_interests=5, min_len=3))


def test_item_category_labels_name_each_items_primary_category(generated: Generated) -> None:
    data, truth = generated
    labels = item_category_labels(data)
    assert labels is not None and len(labels) == data.n_items
    # Items share a label exactly when they share a planted cluster (one category per cluster).
    clusters = truth.item_cluster[1:]
    for i in range(0, data.n_items, 17):
        for j in range(0, data.n_items, 13):
            assert (labels[i] == labels[j]) == (clusters[i] == clusters[j])
    assert all(label.startswith("category:") for label in labels)
    bare = Interactions("bare", ["a", "b"], ["u"], [np.array([1, 2])])
    assert item_category_labels(bare) is None
    # An item whose feature value is 0 (none) gets an empty label.
    genre = np.array([[0, 0], [3, 1], [0, 0]])
    some = Interactions("g", ["a", "b"], ["u"], [np.array([1, 2])], item_features={"genre": genre})
    assert item_category_labels(some) == ["genre:3", ""]
