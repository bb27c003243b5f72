"""Multi-interest retrieval and the merge, checked against brute-force numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.retrieval import (
    NO_ID,
    interest_cosines,
    merge_by_best_score,
    pad_histories,
    retrieve,
)


def _reference_merge(
    ids: np.ndarray,
    scores: np.ndarray,
    n: int,
    active: np.ndarray | None = None,
    exclude: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Plain-Python merge: best score per item over active interests, minus excluded items."""
    out_ids, out_scores = [], []
    for b in range(ids.shape[0]):
        best: dict[int, tuple[float, int]] = {}
        order = 0
        for k in range(ids.shape[1]):
            if active is not None and not active[b, k]:
                continue
            for j in range(ids.shape[2]):
                item, score = int(ids[b, k, j]), float(scores[b, k, j])
                order += 1
                if item == NO_ID or (exclude is not None and item in set(exclude[b].tolist())):
                    continue
                if item not in best or score > best[item][0]:
                    best[item] = (score, order)
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[1][1]))[:n]
        out_ids.append([item for item, _ in ranked] + [NO_ID] * (n - len(ranked)))
        out_scores.append([s for _, (s, _) in ranked] + [-np.inf] * (n - len(ranked)))
    return np.array(out_ids), np.array(out_scores, dtype=np.float32)


def test_merge_by_hand() -> None:
    # user 0: item 7 is found by both interests (0.9 and 0.5): it keeps 0.9, once.
    # user 1: interest 1 is inactive, so item 4 (0.99) must not appear; slot -1 is empty.
    ids = np.array([[[7, 3, 1], [2, 7, 5]], [[6, NO_ID, 8], [4, 9, 6]]])
    scores = np.array(
        [[[0.9, 0.8, 0.1], [0.85, 0.5, 0.4]], [[0.7, 0.0, 0.2], [0.99, 0.6, 0.3]]],
        dtype=np.float32,
    )
    active = np.array([[True, True], [True, False]])
    merged, merged_scores = merge_by_best_score(ids, scores, 4, active=active)
    assert merged.tolist() == [[7, 2, 3, 5], [6, 8, NO_ID, NO_ID]]
    assert merged_scores[0].tolist() == pytest.approx([0.9, 0.85, 0.8, 0.4])
    assert merged_scores[1, 2] == -np.inf
    excluded, _ = merge_by_best_score(ids, scores, 3, exclude=[np.array([7]), np.array([4])])
    assert excluded.tolist() == [[2, 3, 5], [6, 9, 8]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_matches_reference_with_duplicates(seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch, k, m = 40, 4, 12
    ids = rng.integers(0, 25, size=(batch, k, m))  # small id range: many duplicates
    ids[rng.random(ids.shape) < 0.1] = NO_ID
    scores = rng.normal(size=(batch, k, m)).astype(np.float32)
    active = rng.random((batch, k)) < 0.7
    exclude = [rng.integers(0, 25, size=rng.integers(0, 5)) for _ in range(batch)]
    for n in (1, 5, 30):
        got = merge_by_best_score(ids, scores, n, active=active, exclude=exclude)
        want = _reference_merge(ids, scores, n, active, exclude)
        assert np.array_equal(got[0], want[0])
        assert np.array_equal(got[1], want[1])
        assert all(len(set(r[r != NO_ID].tolist())) == (r != NO_ID).sum() for r in got[0])


def test_pad_histories_keeps_the_most_recent() -> None:
    padded = pad_histories(
        [np.array([1, 2, 3, 4, 5]), np.array([9]), np.array([], dtype=np.int64)], 3
    )
    assert padded.tolist() == [[3, 4, 5], [9, 0, 0], [0, 0, 0]]
    assert padded.dtype == np.int64


class ProjectionEncoder:
    """A deterministic multi-interest encoder: K random projections of the history's bag of
    items, with the number of active interests depending on the history length.
    """

    def __init__(self, n_items: int, k: int, dim: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.tables = rng.normal(size=(k, n_items + 1, dim)).astype(np.float32)
        self.tables[:, 0] = 0.0
        self.k = k
        self.calls: list[np.ndarray] = []

    def __call__(self, item_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(item_seq.copy())
        interests = self.tables[:, item_seq].sum(axis=2).transpose(1, 0, 2)  # [B, K, d]
        lengths = (item_seq > 0).sum(axis=1)
        mask = np.arange(self.k)[None, :] < np.clip(lengths // 2, 1, self.k)[:, None]
        return interests.astype(np.float32), mask


def _brute_force(
    encoder: ProjectionEncoder,
    embeddings: np.ndarray,
    histories: list[np.ndarray],
    max_len: int,
    n: int,
    exclude_history: bool,
) -> tuple[np.ndarray, np.ndarray]:
    interests, mask = encoder(pad_histories(histories, max_len))
    all_scores = np.einsum("bkd,id->bki", interests, embeddings)  # [B, K, n_items]
    all_scores = np.where(mask[:, :, None], all_scores, -np.inf).max(axis=1)
    if exclude_history:
        for b, h in enumerate(histories):
            all_scores[b, h - 1] = -np.inf
    top = np.argsort(-all_scores, axis=1, kind="stable")[:, :n]
    return top + 1, np.take_along_axis(all_scores, top, axis=1)


@pytest.mark.parametrize("exclude_history", [False, True])
def test_retrieve_matches_brute_force(exclude_history: bool) -> None:
    rng = np.random.default_rng(3)
    n_items, dim, k, max_len = 300, 16, 4, 8
    embeddings = rng.normal(size=(n_items, dim)).astype(np.float32)
    histories = [rng.integers(1, n_items + 1, size=rng.integers(1, 20)) for _ in range(57)]
    encoder = ProjectionEncoder(n_items, k, dim)
    n = 40
    got = retrieve(
        encoder,
        embeddings,
        histories,
        max_len=max_len,
        n=n,
        batch_size=16,  # several batches, the last one partial
        exclude=histories if exclude_history else None,
    )
    want_ids, want_scores = _brute_force(
        encoder, embeddings, histories, max_len, n, exclude_history
    )
    assert np.array_equal(got.items, want_ids)
    np.testing.assert_allclose(got.scores, want_scores, rtol=1e-5, atol=1e-4)
    if exclude_history:
        assert not any(np.isin(got.items[b], h).any() for b, h in enumerate(histories))
    # every batch the encoder saw was [B, max_len], right-padded, most recent items last
    assert all(c.shape[1] == max_len for c in encoder.calls)
    long = next(i for i, h in enumerate(histories) if len(h) > max_len)
    first = np.concatenate(encoder.calls[:4])[long]
    assert first.tolist() == histories[long][-max_len:].tolist()
    assert got.active_interests.tolist() == [
        min(max(min(len(h), max_len) // 2, 1), k) for h in histories
    ]


def test_shorter_lists_are_prefixes_of_deeper_ones() -> None:
    # Merged top-N from per-interest top-N equals the first N of a deeper merge.
    rng = np.random.default_rng(4)
    embeddings = rng.normal(size=(500, 8)).astype(np.float32)
    histories = [rng.integers(1, 501, size=10) for _ in range(30)]
    encoder = ProjectionEncoder(500, 3, 8, seed=1)
    deep = retrieve(encoder, embeddings, histories, max_len=10, n=200).items
    for n in (1, 20, 50):
        shallow = retrieve(encoder, embeddings, histories, max_len=10, n=n).items
        assert np.array_equal(shallow, deep[:, :n])


def test_small_catalogue_pads_with_zero() -> None:
    embeddings = np.eye(3, dtype=np.float32)
    encoder = ProjectionEncoder(3, 2, 3)
    got = retrieve(encoder, embeddings, [np.array([1, 2, 3, 1])], max_len=4, n=5)
    assert sorted(got.items[0, :3].tolist()) == [1, 2, 3]
    assert got.items[0, 3:].tolist() == [0, 0]


def test_encoder_shape_errors() -> None:
    embeddings = np.zeros((5, 4), dtype=np.float32)

    def wrong_dim(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(seq), 2, 3), np.float32), np.ones((len(seq), 2), bool)

    with pytest.raises(ValueError, match="expected"):
        retrieve(wrong_dim, embeddings, [np.array([1])], max_len=2, n=2)


def test_interest_cosines() -> None:
    interests = np.array(
        [
            [[1, 0], [0, 1], [1, 1]],  # pairs: 0, 1/sqrt2, 1/sqrt2 -> mean
            [[1, 0], [2, 0], [0, 1]],  # third inactive: the one pair is identical -> 1
            [[1, 0], [0, 1], [0, 0]],  # one active -> nan
        ],
        dtype=np.float32,
    )
    mask = np.array([[True, True, True], [True, True, False], [True, False, False]])
    got = interest_cosines(interests, mask)
    assert got[0] == pytest.approx((0 + 2 / np.sqrt(2)) / 3)
    assert got[1] == pytest.approx(1.0)
    assert np.isnan(got[2])
