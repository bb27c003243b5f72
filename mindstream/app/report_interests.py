"""What each of a user's interest vectors captures, in item categories: pure functions shared by
``mindstream demo`` (live Redis records) and ``mindstream report`` (the interests section).

An interest "captures" the categories of the items it retrieves: its top-``n`` items by inner
product over the bundle's item table (exactly how recall ranks them). On the synthetic log each
category is a planted cluster, so an interest matches a planted interest when the majority
category of its top items is one of the user's planted clusters; cosine to the cluster's mean
item embedding is shown beside it as a second, independent view.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_export.dataset import Interactions, category_feature

TOP_ITEMS = 20
# A planted interest with fewer behaviours than this in the user's window is reported, but
# not expected to own an interest (one or two clicks do not make a cluster).
MIN_PLANTED_BEHAVIOURS = 5
NO_CATEGORY = "(none)"
ITEMS_KEPT = 5  # top items kept per interest, to name them when there are no categories


@dataclass(frozen=True)
class InterestView:
    """One interest vector: the categories of its top items, most frequent first."""

    categories: list[tuple[str, int]]
    closest: str | None = None  # nearest category mean embedding (cosine), when computed
    cosine: float | None = None
    items: list[str] = field(default_factory=list)  # its first few top items (producer ids)

    @property
    def majority(self) -> str | None:
        return self.categories[0][0] if self.categories else None

    def to_json(self) -> dict[str, Any]:
        return {
            "categories": [[c, n] for c, n in self.categories],
            "closest": self.closest,
            "cosine": None if self.cosine is None else round(self.cosine, 4),
            "items": list(self.items),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InterestView:
        return cls(
            [(str(c), int(n)) for c, n in data.get("categories", [])],
            data.get("closest"),
            data.get("cosine"),
            [str(i) for i in data.get("items", [])],
        )


@dataclass(frozen=True)
class UserView:
    """A user's window by category, planted interests (synthetic data) and interests."""

    user_id: str
    window: list[tuple[str, int]]  # categories of the window's items, most frequent first
    interests: list[InterestView]
    planted: list[str] | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def recovered(self) -> set[str]:
        return {i.majority for i in self.interests if i.majority is not None}

    def planted_counts(self) -> dict[str, int]:
        counts = dict(self.window)
        return {c: counts.get(c, 0) for c in self.planted or []}

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "window": [[c, n] for c, n in self.window],
            "planted": self.planted,
            "interests": [i.to_json() for i in self.interests],
            "candidates": self.candidates,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UserView:
        return cls(
            str(data["user_id"]),
            [(str(c), int(n)) for c, n in data.get("window", [])],
            [InterestView.from_json(i) for i in data.get("interests", [])],
            data.get("planted"),
            list(data.get("candidates", [])),
        )


def count_categories(categories: Sequence[str | None]) -> list[tuple[str, int]]:
    """(category, count) most frequent first; ties by name; missing ones as ``NO_CATEGORY``."""
    counts = collections.Counter(NO_CATEGORY if c is None else c for c in categories)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def top_rows(vectors: np.ndarray, item_embeddings: np.ndarray, n: int = TOP_ITEMS) -> np.ndarray:
    """Rows of ``item_embeddings`` with the ``n`` largest inner products, per vector, best first
    (``[k, n]``; exact, ties broken by row)."""
    scores = np.asarray(vectors, dtype=np.float32) @ item_embeddings.T
    n = min(n, item_embeddings.shape[0])
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :n]


def category_means(
    item_embeddings: np.ndarray, row_categories: Sequence[str | None]
) -> tuple[list[str], np.ndarray]:
    """Each category's mean item embedding, L2-normalised: (names, ``[C, d]``)."""
    names = sorted({c for c in row_categories if c is not None})
    index = {c: j for j, c in enumerate(names)}
    sums = np.zeros((len(names), item_embeddings.shape[1]), dtype=np.float64)
    counts = np.zeros(len(names))
    for row, category in enumerate(row_categories):
        if category is not None:
            sums[index[category]] += item_embeddings[row]
            counts[index[category]] += 1
    means = sums / np.maximum(counts, 1)[:, None]
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    return names, (means / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def view_interests(
    vectors: np.ndarray,
    item_embeddings: np.ndarray,
    row_categories: Sequence[str | None],
    *,
    means: tuple[list[str], np.ndarray] | None = None,
    top: int = TOP_ITEMS,
    row_items: Sequence[str] | None = None,
) -> list[InterestView]:
    """What each row of ``vectors`` (``[k, d]``) captures; ``means`` from :func:`category_means`
    adds the nearest category mean by cosine; ``row_items`` (the producer id of each row) adds
    the first ``ITEMS_KEPT`` top items."""
    if len(vectors) == 0:
        return []
    rows = top_rows(vectors, item_embeddings, top)
    views = []
    for j, vector in enumerate(np.asarray(vectors, dtype=np.float32)):
        closest, cosine = None, None
        if means is not None and len(means[0]):
            norm = float(np.linalg.norm(vector))
            cosines = means[1] @ (vector / norm if norm > 0 else vector)
            best = int(np.argmax(cosines))
            closest, cosine = means[0][best], float(cosines[best])
        categories = count_categories([row_categories[r] for r in rows[j]])
        items = [] if row_items is None else [row_items[r] for r in rows[j][:ITEMS_KEPT]]
        views.append(InterestView(categories, closest, cosine, items))
    return views


@dataclass(frozen=True)
class MatchSummary:
    """How often planted interests are recovered, over users with two or more of them."""

    users: int
    planted: int  # planted interests with >= MIN_PLANTED_BEHAVIOURS behaviours in the window
    recovered: int  # of those, the majority category of some interest
    planted_all: int
    recovered_all: int
    chance: float  # share of random non-planted clusters that some interest owns

    @property
    def share(self) -> float:
        return self.recovered / self.planted if self.planted else float("nan")

    @property
    def share_all(self) -> float:
        return self.recovered_all / self.planted_all if self.planted_all else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "planted": self.planted,
            "recovered": self.recovered,
            "share": round(self.share, 4),
            "planted_all": self.planted_all,
            "recovered_all": self.recovered_all,
            "share_all": round(self.share_all, 4),
            "chance": round(self.chance, 4),
            "min_behaviours": MIN_PLANTED_BEHAVIOURS,
        }


def match_planted(
    users: Sequence[UserView], all_categories: Sequence[str], *, seed: int = 0
) -> MatchSummary:
    """Compare recovered majority categories with planted clusters (users with >= 2 planted).

    ``chance`` draws, per user, one category the user was not planted with and counts how often
    an interest owns it anyway: what matching would look like if the interests were unrelated.
    """
    rng = np.random.default_rng(seed)
    n_users = planted = recovered = planted_all = recovered_all = 0
    chance_hits = chance_draws = 0
    for user in users:
        if not user.planted or len(user.planted) < 2:
            continue
        n_users += 1
        owned = user.recovered
        counts = user.planted_counts()
        for category in user.planted:
            planted_all += 1
            recovered_all += category in owned
            if counts[category] >= MIN_PLANTED_BEHAVIOURS:
                planted += 1
                recovered += category in owned
        others = [c for c in all_categories if c not in user.planted]
        if others:
            chance_draws += 1
            chance_hits += others[int(rng.integers(len(others)))] in owned
    chance = chance_hits / chance_draws if chance_draws else float("nan")
    return MatchSummary(n_users, planted, recovered, planted_all, recovered_all, chance)


def window_overlap(users: Sequence[UserView]) -> float:
    """Share of interests whose majority category occurs in the user's own window (real data:
    no planted truth, so this says whether interests follow what the user did); NaN when no
    interest has a named majority category."""
    hits = total = 0
    for user in users:
        seen = {c for c, _ in user.window}
        for interest in user.interests:
            if interest.majority not in (None, NO_CATEGORY):
                total += 1
                hits += interest.majority in seen
    return hits / total if total else float("nan")


# --- from data and a bundle ------------------------------------------------------------------


def item_category_names(
    data: Interactions, vocab: Mapping[str, Sequence[str]] | None = None
) -> dict[str, str | None]:
    """Producer item id -> category name (first value of the category feature; the feature id
    as text when ``vocab`` does not name it; None without a category)."""
    feature = category_feature(data)
    if feature is None:
        return dict.fromkeys(data.item_ids)
    names = (vocab or {}).get(feature)
    column = data.item_features[feature][:, 0]
    out: dict[str, str | None] = {}
    for index, item in enumerate(data.item_ids, start=1):
        fid = int(column[index])
        out[item] = None if fid == 0 else (names[fid - 1] if names else str(fid))
    return out


def user_views(
    user_ids: Sequence[str],
    windows: Sequence[Sequence[str]],
    vectors: Sequence[np.ndarray],
    item_ids: Sequence[str],
    item_embeddings: np.ndarray,
    categories: Mapping[str, str | None],
    *,
    planted: Sequence[list[str] | None] | None = None,
    candidates: Sequence[list[dict[str, Any]]] | None = None,
    top: int = TOP_ITEMS,
) -> list[UserView]:
    """A :class:`UserView` per user from its window (producer item ids), its interest vectors
    (``[k, d]``) and a bundle's item table (``item_ids`` aligned with ``item_embeddings``)."""
    row_categories = [categories.get(item) for item in item_ids]
    means = category_means(item_embeddings, row_categories)
    out = []
    for u, user_id in enumerate(user_ids):
        out.append(
            UserView(
                user_id,
                count_categories([categories.get(item) for item in windows[u]]),
                view_interests(
                    vectors[u],
                    item_embeddings,
                    row_categories,
                    means=means,
                    top=top,
                    row_items=item_ids,
                ),
                None if planted is None else planted[u],
                [] if candidates is None else candidates[u],
            )
        )
    return out
