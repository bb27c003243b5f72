"""Multi-interest retrieval over the full item corpus: pad histories, encode them into interests,
search every active interest with Faiss exact inner product, and merge the per-interest lists by
best score (:func:`merge_by_best_score`, the one pure merge other code can reuse).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import faiss
import numpy as np

from model_export.dataset import PAD

logger = logging.getLogger(__name__)

NO_ID = -1  # id of an empty slot in per-interest and merged result lists


class UserEncoder(Protocol):
    """Anything that turns behaviour sequences into interests, like the user tower.

    Takes int64 ``[B, L]`` model indices, right-padded with 0, the most recent ``L`` items in
    time order; returns ``interests`` float32 ``[B, K, d]`` and ``mask`` bool ``[B, K]`` (True
    for the interests the user actually has).
    """

    def __call__(self, item_seq: np.ndarray, /) -> tuple[np.ndarray, np.ndarray]: ...


def pad_histories(histories: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """int64 ``[len(histories), max_len]``: each history's last ``max_len`` items, right-padded."""
    out = np.full((len(histories), max_len), PAD, dtype=np.int64)
    for row, history in enumerate(histories):
        recent = np.asarray(history, dtype=np.int64)[-max_len:]
        out[row, : len(recent)] = recent
    return out


def merge_by_best_score(
    ids: np.ndarray,
    scores: np.ndarray,
    n: int,
    *,
    active: np.ndarray | None = None,
    exclude: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-interest result lists into one top-``n`` list per user.

    ``ids``/``scores`` are ``[B, K, M]``: interest ``k`` of user ``b`` found ``ids[b, k, j]``
    (``NO_ID`` = empty slot) with ``scores[b, k, j]``. Entries of inactive interests
    (``active[b, k]`` False) and items in ``exclude[b]`` are ignored. An item found by several
    interests keeps its best score. Returns ids int64 ``[B, n]`` in descending score order
    (padded with ``NO_ID``) and their scores float32 ``[B, n]`` (padded with ``-inf``); equal
    scores keep interest order, then list order.
    """
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    if ids.ndim != 3 or ids.shape != scores.shape:
        raise ValueError(f"ids {ids.shape} and scores {scores.shape} must both be [B, K, M]")
    batch, k, m = ids.shape
    valid = ids != NO_ID
    if active is not None:
        valid &= np.asarray(active, dtype=bool).reshape(batch, k, 1)
    flat_ids = np.where(valid, ids, NO_ID).reshape(batch, k * m)
    flat_scores = np.where(valid, scores, -np.inf).reshape(batch, k * m)
    if exclude is not None:
        hidden = _members(flat_ids, exclude)
        flat_ids = np.where(hidden, NO_ID, flat_ids)
        flat_scores = np.where(hidden, -np.inf, flat_scores)

    by_score = np.argsort(-flat_scores, axis=1, kind="stable")
    ranked_ids = np.take_along_axis(flat_ids, by_score, axis=1)
    ranked_scores = np.take_along_axis(flat_scores, by_score, axis=1)
    # The first occurrence of an item in score order is its best; a stable sort by id keeps
    # score order inside each run of equal ids, so run starts mark the keepers.
    by_id = np.argsort(ranked_ids, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(ranked_ids, by_id, axis=1)
    run_start = np.ones(sorted_ids.shape, dtype=bool)
    run_start[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    keep = np.empty_like(run_start)
    np.put_along_axis(keep, by_id, run_start, axis=1)
    keep &= ranked_ids != NO_ID

    position = np.cumsum(keep, axis=1) - 1
    rows, cols = np.nonzero(keep & (position < n))
    out_ids = np.full((batch, n), NO_ID, dtype=np.int64)
    out_scores = np.full((batch, n), -np.inf, dtype=np.float32)
    out_ids[rows, position[rows, cols]] = ranked_ids[rows, cols]
    out_scores[rows, position[rows, cols]] = ranked_scores[rows, cols]
    return out_ids, out_scores


def interest_cosines(interests: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean pairwise cosine of each user's active interests, float64 ``[B]``; NaN for users
    with fewer than two (a value near 1 means the interests collapsed into one).
    """
    norms = np.linalg.norm(interests, axis=2, keepdims=True)
    unit = interests / np.maximum(norms, 1e-12)
    gram = np.einsum("bkd,bjd->bkj", unit, unit)
    k = interests.shape[1]
    pairs = mask[:, :, None] & mask[:, None, :] & np.triu(np.ones((k, k), dtype=bool), 1)
    counts = pairs.sum(axis=(1, 2))
    sums = np.where(pairs, gram, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


@dataclass(frozen=True)
class Retrieved:
    """Merged top-n lists: ``items`` int64 ``[U, n]`` model indices (``PAD`` = empty slot) and
    their ``scores``; per user the number of active interests and their mean pairwise cosine.
    """

    items: np.ndarray
    scores: np.ndarray
    active_interests: np.ndarray
    interest_cosine: np.ndarray


def exact_index(item_embeddings: np.ndarray) -> faiss.IndexFlatIP:
    """Exact inner-product index over ``[n_items, d]`` embeddings (row i-1 = model index i)."""
    table = np.ascontiguousarray(item_embeddings, dtype=np.float32)
    if table.ndim != 2:
        raise ValueError(f"item embeddings must be [n_items, d], got {table.shape}")
    index = faiss.IndexFlatIP(table.shape[1])
    index.add(table)
    return index


def retrieve(
    encoder: UserEncoder,
    item_embeddings: np.ndarray,
    histories: Sequence[np.ndarray],
    *,
    max_len: int,
    n: int,
    batch_size: int = 1024,
    exclude: Sequence[np.ndarray] | None = None,
) -> Retrieved:
    """Each active interest retrieves its top items exactly; lists merge by best score to ``n``.

    Users are encoded ``batch_size`` at a time from their last ``max_len`` behaviours.
    ``exclude[u]`` (e.g. the user's history) is removed before the cut; each interest then
    searches ``n + |exclude[u]|`` deep so the merged list still holds ``n`` items when it can.
    """
    index = exact_index(item_embeddings)
    n_items = index.ntotal
    items = np.full((len(histories), n), PAD, dtype=np.int64)
    scores = np.full((len(histories), n), -np.inf, dtype=np.float32)
    active_counts = np.zeros(len(histories), dtype=np.int64)
    cosines = np.full(len(histories), np.nan)
    for start in range(0, len(histories), batch_size):
        stop = min(start + batch_size, len(histories))
        interests, mask = encoder(pad_histories(histories[start:stop], max_len))
        interests, mask = _checked(interests, mask, stop - start, index.d)
        batch_exclude = None if exclude is None else [np.unique(e) for e in exclude[start:stop]]
        extra = max((len(e) for e in batch_exclude), default=0) if batch_exclude else 0
        depth = min(n_items, n + extra)

        batch, k, dim = interests.shape
        found_ids = np.full((batch * k, depth), NO_ID, dtype=np.int64)
        found_scores = np.full((batch * k, depth), -np.inf, dtype=np.float32)
        rows = np.flatnonzero(mask.reshape(-1))
        if len(rows):
            queries = np.ascontiguousarray(interests.reshape(batch * k, dim)[rows])
            dist, rows_found = index.search(queries, depth)
            found_ids[rows] = np.where(rows_found >= 0, rows_found + 1, NO_ID)
            found_scores[rows] = dist
        merged, merged_scores = merge_by_best_score(
            found_ids.reshape(batch, k, depth),
            found_scores.reshape(batch, k, depth),
            n,
            active=mask,
            exclude=batch_exclude,
        )
        items[start:stop] = np.where(merged == NO_ID, PAD, merged)
        scores[start:stop] = merged_scores
        active_counts[start:stop] = mask.sum(axis=1)
        cosines[start:stop] = interest_cosines(interests, mask)
    silent = int((active_counts == 0).sum())
    if silent:
        logger.warning("users without an active interest retrieve nothing count=%d", silent)
    return Retrieved(items, scores, active_counts, cosines)


def _checked(
    interests: np.ndarray, mask: np.ndarray, batch: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    interests = np.asarray(interests, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if interests.ndim != 3 or interests.shape[0] != batch or interests.shape[2] != dim:
        raise ValueError(
            f"encoder returned interests {interests.shape}, expected [{batch}, K, {dim}]"
        )
    if mask.shape != interests.shape[:2]:
        raise ValueError(f"encoder returned mask {mask.shape}, expected {interests.shape[:2]}")
    return interests, mask


def _members(ids: np.ndarray, sets: Sequence[np.ndarray]) -> np.ndarray:
    """bool like ``ids`` [B, M]: ``ids[b, j]`` is in ``sets[b]`` (ignores ``NO_ID``)."""
    if len(sets) != ids.shape[0]:
        raise ValueError(f"exclude has {len(sets)} entries for {ids.shape[0]} users")
    lists = [np.asarray(s, dtype=np.int64).ravel() for s in sets]
    sizes = np.array([len(s) for s in lists], dtype=np.int64)
    if not sizes.sum():
        return np.zeros(ids.shape, dtype=bool)
    members = np.concatenate(lists)
    low = min(int(ids.min(initial=0)), int(members.min()))
    stride = max(int(ids.max(initial=0)), int(members.max())) - low + 1
    owner = np.repeat(np.arange(len(lists), dtype=np.int64), sizes)
    keys = np.arange(len(lists), dtype=np.int64)[:, None] * stride + (ids - low)
    return np.isin(keys, owner * stride + (members - low)) & (ids != NO_ID)
