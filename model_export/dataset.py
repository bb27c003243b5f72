"""The one in-memory form every loader produces and every trainer and evaluator reads.

Model item indices are 1-based: index 0 is padding, and index ``i`` is ``item_ids[i - 1]``,
the producer's id. Row ``i - 1`` of a bundle's ``item_embeddings.npy`` belongs to index ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAD = 0


@dataclass(frozen=True)
class Interactions:
    """Per-user, time-ordered behaviour sequences plus optional side features.

    ``sequences[u]`` holds model item indices (int64, >= 1) of ``users[u]`` in event-time
    order (ties broken by file order). ``timestamps[u]`` (epoch milliseconds) is aligned with
    it when the source has times. ``item_features[name]`` is an int64 matrix
    ``[n_items + 1, width]`` of feature ids (0 = none; row 0 is the padding item), so
    multi-valued features such as genres fit; ``feature_sizes[name]`` is its vocabulary size
    including 0. ``user_features[name]`` is int64 ``[n_users]`` aligned with ``users``.
    """

    name: str
    item_ids: list[str]
    users: list[str]
    sequences: list[np.ndarray]
    timestamps: list[np.ndarray] | None = None
    item_features: dict[str, np.ndarray] = field(default_factory=dict)
    feature_sizes: dict[str, int] = field(default_factory=dict)
    user_features: dict[str, np.ndarray] = field(default_factory=dict)
    user_feature_sizes: dict[str, int] = field(default_factory=dict)
    # Optional human labels for items (e.g. titles, category names), index-aligned like item_ids.
    item_labels: list[str] | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def item_index(self) -> dict[str, int]:
        """Producer item id -> model index (1-based)."""
        return {item: i + 1 for i, item in enumerate(self.item_ids)}

    def summary(self) -> str:
        lengths = np.array([len(s) for s in self.sequences]) if self.sequences else np.zeros(1)
        return (
            f"{self.name}: {self.n_users} users, {self.n_items} items, "
            f"{self.n_interactions} interactions, sequence length mean {lengths.mean():.1f} "
            f"max {lengths.max()}, item features {sorted(self.item_features)}"
        )


@dataclass(frozen=True)
class PlantedTruth:
    """What the synthetic generator planted, so a test can check what the model recovers.

    ``item_cluster[i]`` is the latent cluster of model index ``i`` (entry 0 unused, -1);
    ``user_clusters[u]`` lists the clusters user ``u`` draws from.
    """

    item_cluster: np.ndarray
    user_clusters: list[list[int]]
    n_clusters: int


# Item features whose (first) value names an item's category, in order of preference.
CATEGORY_FEATURES = ("category", "genre")


def category_feature(data: Interactions) -> str | None:
    """The item feature that names categories in ``data`` (None when it has none)."""
    return next((f for f in CATEGORY_FEATURES if f in data.item_features), None)


def primary_category(item_features: dict[str, np.ndarray]) -> np.ndarray | None:
    """int64 [n_items + 1]: each model index's first value of its first side feature (the
    primary genre, tag or category; 0 = none), or None without side features."""
    if not item_features:
        return None
    table = item_features[sorted(item_features)[0]]
    return np.asarray(table[:, 0], dtype=np.int64)


def item_category_labels(data: Interactions) -> list[str] | None:
    """One category label per item in ``item_ids`` order, as a bundle carries them: the
    primary category of :func:`primary_category` as ``"<feature>:<value id>"``, ``""`` where
    an item has none; None when the data has no item features."""
    codes = primary_category(data.item_features)
    if codes is None:
        return None
    feature = sorted(data.item_features)[0]
    return [f"{feature}:{c}" if c > 0 else "" for c in codes[1:].tolist()]
