"""A synthetic click log with planted multi-interest users, for the demo and for tests that must
check what a model recovers: items fall into latent clusters (one category per cluster), each
user draws from 1..m clusters in interleaved runs, with a share of noise behaviours.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_export.data.events import iter_click_events
from model_export.dataset import Interactions, PlantedTruth

logger = logging.getLogger(__name__)

CATEGORY = "category"


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of the generated log; the defaults make a small but non-trivial demo data set."""

    n_users: int = 2_000
    n_items: int = 1_000  # spread evenly over the clusters
    n_clusters: int = 20  # latent interests; cluster c is category "c{c}"
    max_interests: int = 4  # each user draws from 1..max_interests clusters
    single_interest_share: float = 0.25  # users with exactly one cluster; the rest 2..max
    min_len: int = 20  # behaviours per user, uniform in [min_len, max_len]
    max_len: int = 60
    stay_prob: float = 0.7  # chance the next behaviour stays in the current cluster's run
    noise: float = 0.05  # share of behaviours drawn uniformly from the whole catalogue
    popularity_exponent: float = 0.8  # Zipf exponent of item popularity inside a cluster
    start_ms: int = 1_700_000_000_000  # users start within [start_ms, start_ms + span_ms)
    span_ms: int = 24 * 3600 * 1000
    mean_gap_ms: int = 60_000  # mean time between a user's behaviours (exponential)
    seed: int = 0

    def validate(self) -> None:
        if self.n_users < 1 or self.n_clusters < 1 or self.n_items < self.n_clusters:
            raise ValueError("need n_users >= 1 and n_items >= n_clusters >= 1")
        if not 1 <= self.max_interests <= self.n_clusters:
            raise ValueError("max_interests must be in 1..n_clusters")
        if not self.max_interests <= self.min_len <= self.max_len:
            raise ValueError("need max_interests <= min_len <= max_len")
        for name in ("single_interest_share", "stay_prob", "noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.mean_gap_ms < 1 or self.span_ms < 1:
            raise ValueError("mean_gap_ms and span_ms must be >= 1")


def generate(config: SyntheticConfig | None = None) -> tuple[Interactions, PlantedTruth]:
    """Generate the log described by ``config``; the same config (seed included) gives the
    same data. Items are ``i1..iN``, users ``u1..uM``; every user's sequence contains each of
    their planted clusters at least once; timestamps are strictly increasing per user.
    """
    cfg = config or SyntheticConfig()
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)

    # Model index j + 1 <-> item "i{j+1}"; clusters get items in shuffled order, and the order
    # inside a cluster is its popularity rank.
    item_cluster = np.full(cfg.n_items + 1, -1, dtype=np.int64)
    shuffled = rng.permutation(cfg.n_items) + 1
    item_cluster[shuffled] = np.arange(cfg.n_items) % cfg.n_clusters
    cluster_items = [shuffled[c :: cfg.n_clusters] for c in range(cfg.n_clusters)]
    cluster_probs = []
    for members in cluster_items:
        weights = 1.0 / np.arange(1, len(members) + 1) ** cfg.popularity_exponent
        cluster_probs.append(weights / weights.sum())
    rank_in_cluster = np.zeros(cfg.n_items + 1, dtype=np.int64)
    for members in cluster_items:
        rank_in_cluster[members] = np.arange(1, len(members) + 1)

    sequences: list[np.ndarray] = []
    timestamps: list[np.ndarray] = []
    user_clusters: list[list[int]] = []
    for _ in range(cfg.n_users):
        clusters = _draw_clusters(rng, cfg)
        labels = _cluster_runs(rng, cfg, len(clusters))
        items = np.empty(len(labels), dtype=np.int64)
        for j, cluster in enumerate(clusters):
            at = np.flatnonzero(labels == j)
            items[at] = rng.choice(cluster_items[cluster], size=len(at), p=cluster_probs[cluster])
        noisy = rng.random(len(labels)) < cfg.noise
        noisy[np.unique(labels, return_index=True)[1]] = False  # keep each interest present
        items[noisy] = rng.integers(1, cfg.n_items + 1, size=int(noisy.sum()))
        gaps = 1 + rng.exponential(cfg.mean_gap_ms, size=len(labels) - 1).astype(np.int64)
        start = cfg.start_ms + int(rng.integers(cfg.span_ms))
        sequences.append(items)
        timestamps.append(start + np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64))
        user_clusters.append([int(c) for c in clusters])

    category = np.zeros((cfg.n_items + 1, 1), dtype=np.int64)
    category[1:, 0] = item_cluster[1:] + 1
    data = Interactions(
        name=f"synthetic-{cfg.n_users}u-{cfg.n_items}i-{cfg.n_clusters}c-seed{cfg.seed}",
        item_ids=[f"i{j}" for j in range(1, cfg.n_items + 1)],
        users=[f"u{u}" for u in range(1, cfg.n_users + 1)],
        sequences=sequences,
        timestamps=timestamps,
        item_features={CATEGORY: category},
        feature_sizes={CATEGORY: cfg.n_clusters + 1},
        item_labels=[
            f"{category_name(int(item_cluster[j]))} #{rank_in_cluster[j]}"
            for j in range(1, cfg.n_items + 1)
        ],
    )
    truth = PlantedTruth(
        item_cluster=item_cluster, user_clusters=user_clusters, n_clusters=cfg.n_clusters
    )
    logger.info("generated %s", data.summary())
    return data, truth


def category_name(cluster: int) -> str:
    """The producer-side category of a cluster's items (cluster ``c`` -> ``"c{c}"``)."""
    return f"c{cluster}"


def click_events(data: Interactions, *, event: str = "click") -> Iterator[dict[str, Any]]:
    """A generated log as click-event dicts in global event-time order (see
    :func:`model_export.data.events.iter_click_events`), categories named ``c{cluster}``.
    """
    names = [category_name(c) for c in range(data.feature_sizes[CATEGORY] - 1)]
    return iter_click_events(data, event=event, category_feature=CATEGORY, category_names=names)


def _draw_clusters(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    if cfg.max_interests == 1 or rng.random() < cfg.single_interest_share:
        count = 1
    else:
        count = int(rng.integers(2, cfg.max_interests + 1))
    return rng.choice(cfg.n_clusters, size=count, replace=False)


def _cluster_runs(rng: np.random.Generator, cfg: SyntheticConfig, n_interests: int) -> np.ndarray:
    """Which of the user's clusters each behaviour comes from: runs that stay in one cluster
    with ``stay_prob`` and otherwise switch to a cluster drawn by the user's interest weights.
    """
    length = int(rng.integers(cfg.min_len, cfg.max_len + 1))
    weights = rng.dirichlet(np.full(n_interests, 2.0))
    switch = rng.random(length) >= cfg.stay_prob
    switch[0] = True
    draws = rng.choice(n_interests, size=length, p=weights)
    run_start = np.maximum.accumulate(np.where(switch, np.arange(length), 0))
    labels = draws[run_start]
    if len(np.unique(labels)) < n_interests:
        # Plant every interest at least once, on distinct positions so none overwrites another.
        labels[rng.choice(length, size=n_interests, replace=False)] = np.arange(n_interests)
    return labels
