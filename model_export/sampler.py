"""Negative sampling for the sampled-softmax loss.

Negatives are drawn once per batch and shared by every row (Jean et al. 2015; the usual
two-tower practice), with replacement, from q(i) ∝ (count(i) + 1) ** alpha over the item
indices 1..n_items (word2vec's unigram^0.75 with add-one smoothing, so items never seen in
training can still be pushed down). The loss subtracts log q from every candidate logit, the
label's included (the sampled-softmax / logQ correction), unless the trainer turns it off.
Accidental hits (a negative equal to a row's label) are masked out of that row by the loss.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from model_export.exceptions import ModelExportError

logger = logging.getLogger(__name__)


class PopularityNegativeSampler:
    """Draws shared negatives from a smoothed popularity distribution q(i) ∝ (c_i + 1)^alpha."""

    def __init__(
        self,
        item_counts: np.ndarray,
        n_negatives: int,
        *,
        alpha: float = 0.75,
        rng: np.random.Generator,
    ) -> None:
        """``item_counts[i]`` is the training count of model index i (entry 0, padding, unused)."""
        counts = np.asarray(item_counts, dtype=np.float64)
        if counts.ndim != 1 or len(counts) < 2:
            raise ModelExportError("item_counts must be a vector of n_items + 1 counts")
        if n_negatives < 1:
            raise ModelExportError(f"n_negatives must be >= 1; got {n_negatives}")
        weights = (np.maximum(counts[1:], 0.0) + 1.0) ** alpha
        self.probabilities = np.concatenate([[0.0], weights / weights.sum()])
        self._cdf = np.cumsum(self.probabilities[1:])
        self._cdf[-1] = 1.0
        self.log_q = np.log(np.maximum(self.probabilities, 1e-30)).astype(np.float32)
        self.log_q[0] = 0.0
        self.n_negatives = n_negatives
        self.alpha = alpha
        self._rng = rng

    @property
    def n_items(self) -> int:
        return len(self.probabilities) - 1

    def sample(self) -> np.ndarray:
        """``n_negatives`` model indices (int64, in 1..n_items, with replacement)."""
        u = self._rng.random(self.n_negatives)
        return (np.searchsorted(self._cdf, u, side="right") + 1).astype(np.int64)


def item_counts(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Occurrences of every model index 0..n_items in ``sequences``."""
    flat = np.concatenate(list(sequences)) if len(sequences) else np.zeros(0, dtype=np.int64)
    return np.bincount(flat, minlength=n_items + 1)[: n_items + 1].astype(np.int64)
