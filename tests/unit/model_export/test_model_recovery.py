"""MIND recovers planted interests from behaviour alone (synthetic data, seconds of training).

The generator plants 2-4 item clusters per multi-interest user. Item side features are turned
off (the synthetic category *is* the cluster), so clusters can only be learnt from
co-occurrence. For each user, every planted cluster should be "owned" by one of the user's
interests: the majority cluster of that interest's top-20 inner-product retrieval. A random
cluster is owned by chance with probability about K'/n_clusters (4/15 here), and a
single-vector model can own at most one cluster per user.
"""

from __future__ import annotations

import numpy as np
import pytest

from model_export.data.synthetic import SyntheticConfig, generate
from model_export.export import item_embedding_matrix
from model_export.model import MindConfig, build_tower
from model_export.retrieval import interest_cosines, pad_histories
from model_export.train import TorchUserEncoder, TrainConfig, train

N_CLUSTERS = 15
TOP = 20


def owned_clusters(interests, mask, items, item_cluster):
    """Per user: the set of majority clusters of its active interests' top-20 items."""
    scores = interests @ items.T  # [U, K, n_items]
    top = np.argsort(-scores, axis=-1)[..., :TOP] + 1
    clusters = item_cluster[top]
    owned = []
    for u in range(len(interests)):
        mine = set()
        for j in np.flatnonzero(mask[u]):
            values, counts = np.unique(clusters[u, j], return_counts=True)
            mine.add(int(values[counts.argmax()]))
        owned.append(mine)
    return owned


@pytest.fixture(scope="module")
def planted():
    return generate(
        SyntheticConfig(n_users=600, n_items=300, n_clusters=N_CLUSTERS, noise=0.05, seed=1)
    )


def trained(kind, planted):
    data, _ = planted
    tower = build_tower(MindConfig(kind=kind, n_items=data.n_items, dim=16, k=4, seed=0))
    train(
        tower,
        data.sequences,
        TrainConfig(
            epochs=4, batch_size=128, lr=3e-3, negatives=100, log_every=0, threads=1, seed=0
        ),
    )
    interests, mask = TorchUserEncoder(tower)(pad_histories(data.sequences, 50))
    return interests, mask, item_embedding_matrix(tower)


def coverage(owned, truth, multi):
    rng = np.random.default_rng(0)
    planted_hits, random_hits = [], []
    for u in multi:
        clusters = truth.user_clusters[u]
        others = [c for c in range(truth.n_clusters) if c not in clusters]
        planted_hits.append(len(owned[u] & set(clusters)) / len(clusters))
        random_hits.append(float(int(rng.choice(others)) in owned[u]))
    return float(np.mean(planted_hits)), float(np.mean(random_hits))


@pytest.fixture(scope="module")
def shares(planted):
    """(share of planted clusters owned, share of random other clusters owned), per model."""
    _, truth = planted
    multi = [u for u, c in enumerate(truth.user_clusters) if len(c) >= 2]
    assert len(multi) > 300
    out = {}
    for kind in ("mind", "youtube_dnn"):
        interests, mask, items = trained(kind, planted)
        owned = owned_clusters(interests, mask, items, truth.item_cluster)
        out[kind] = (*coverage(owned, truth, multi), interests[multi], mask[multi])
    return out


def test_mind_interests_cover_the_planted_clusters(shares):
    planted_share, random_share, interests, mask = shares["mind"]
    # Measured 0.65-0.66 of planted clusters owned vs 0.03-0.04 for a random other cluster
    # (data seeds 1-3); the one-vector baseline owns 0.35 (one cluster of 2-4).
    assert planted_share >= 0.55, (planted_share, random_share)
    assert random_share <= 0.15, (planted_share, random_share)
    # No interest collapse: the interests of a multi-interest user point different ways.
    cosines = interest_cosines(interests, mask)
    # (measured 0.33-0.41; the collapsed public implementation sat at 0.94-0.99).
    assert np.nanmean(cosines) < 0.7


def test_single_vector_baseline_finds_one_cluster_and_mind_finds_more(shares):
    baseline, baseline_random, _, mask = shares["youtube_dnn"]
    assert mask.shape[1] == 1
    # One vector owns one cluster per user: for a user with c planted clusters the share is
    # 1/c when that cluster is a planted one. The baseline learns: the cluster it owns is a
    # planted one far more often than a random other cluster is owned (measured 0.35-0.36
    # against 0.002, data seeds 1-2).
    assert baseline >= 0.25, (baseline, baseline_random)
    assert baseline_random <= 0.05, (baseline, baseline_random)
    # MIND's several interests own clearly more of the planted clusters than one vector can
    # (measured 0.65-0.66 against 0.35-0.36).
    mind = shares["mind"][0]
    assert mind - baseline >= 0.2, (mind, baseline)
