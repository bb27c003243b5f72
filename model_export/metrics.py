"""Top-N ranking metrics over retrieved lists (pure numpy): HitRate, Recall and NDCG at any
cut-off, and the whole HitRate@N curve.

Targets are compared as sets: a target item repeated in a user's held-out behaviours counts
once (retrieval returns each item once; ComiRec's reference code counts repeats instead,
which only differs on logs with repeat behaviours such as Taobao).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NONE = 0  # model index used for "no item" in retrieved lists (never a target)


def relevance(
    retrieved: np.ndarray, targets: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Which retrieved items are targets.

    ``retrieved`` is int64 ``[U, M]`` of model indices in rank order (``NONE``, or a negative
    id such as the retrieval's ``NO_ID``, = empty slot);
    ``targets[u]`` the target model indices of user ``u``. Returns ``rel`` bool ``[U, M]`` and
    the number of distinct targets per user ``[U]``.
    """
    retrieved = np.asarray(retrieved, dtype=np.int64)
    if retrieved.ndim != 2 or retrieved.shape[0] != len(targets):
        raise ValueError(f"retrieved {retrieved.shape} does not match {len(targets)} users")
    users = len(targets)
    lengths = np.fromiter((len(t) for t in targets), dtype=np.int64, count=users)
    items = (
        np.concatenate([np.asarray(t, dtype=np.int64).ravel() for t in targets])
        if users
        else np.zeros(0, dtype=np.int64)
    )
    # One (user, item) key per pair: de-duplication and membership become single numpy calls.
    stride = max(int(retrieved.max(initial=0)), int(items.max(initial=0))) + 1
    owners = np.repeat(np.arange(users, dtype=np.int64), lengths)
    target_keys = np.unique(owners * stride + items)
    n_targets = np.bincount(target_keys // stride, minlength=users).astype(np.int64)
    keys = np.arange(users, dtype=np.int64)[:, None] * stride + retrieved
    # target_keys is sorted (np.unique), so a binary search beats np.isin's full sort here.
    at = np.minimum(np.searchsorted(target_keys, keys), max(len(target_keys) - 1, 0))
    # An empty slot's key would alias another user's item (a negative id reaches back into
    # the previous user's range), so it is masked out rather than looked up.
    rel = (target_keys[at] == keys if len(target_keys) else np.zeros(keys.shape, bool)) & (
        retrieved > NONE
    )
    return rel, n_targets


def ranking_metrics(rel: np.ndarray, n_targets: np.ndarray, ns: Sequence[int]) -> dict[str, float]:
    """Mean ``hit_rate@N``, ``recall@N`` and ``ndcg@N`` over users, for every N in ``ns``.

    HitRate: at least one target in the top N. Recall: distinct targets in the top N over
    distinct targets. NDCG: binary gains ``1/log2(rank + 2)`` over the ideal for
    ``min(targets, N)`` hits. Users without targets are not allowed.
    """
    if len(n_targets) and int(n_targets.min()) < 1:
        raise ValueError("every evaluated user needs at least one target")
    width = rel.shape[1]
    if any(n > width for n in ns):
        raise ValueError(f"cut-offs {list(ns)} exceed the {width} retrieved items")
    discounts = 1.0 / np.log2(np.arange(width) + 2.0)
    hits = np.cumsum(rel, axis=1)
    dcg = np.cumsum(rel * discounts, axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    out: dict[str, float] = {}
    for n in ns:
        found = hits[:, n - 1]
        out[f"hit_rate@{n}"] = _mean(found > 0)
        out[f"recall@{n}"] = _mean(found / np.maximum(n_targets, 1))
        out[f"ndcg@{n}"] = _mean(dcg[:, n - 1] / ideal[np.minimum(n_targets, n)])
    return out


def hit_rate_curve(rel: np.ndarray) -> np.ndarray:
    """HitRate@N for N = 1..M (entry N - 1), from ``rel`` ``[U, M]``."""
    if rel.shape[0] == 0:
        return np.zeros(rel.shape[1])
    first_hit = np.where(rel.any(axis=1), rel.argmax(axis=1), rel.shape[1])
    return np.cumsum(np.bincount(first_hit, minlength=rel.shape[1] + 1)[:-1]) / rel.shape[0]


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else 0.0
