"""Structured synthetic item catalogues and interest vectors for tests and benchmarks.

Real item embeddings are clustered (categories, brands, co-clicked groups) and their norms vary
with popularity; uniform noise has neither property and makes approximate indexes look better
or worse than they are. This module draws a Gaussian mixture with log-normal norms instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_export.bundle import write_bundle

# Recall never runs the user tower; bundles written here for recall's tests and benchmarks
# carry this in place of an ONNX model, so the stream worker cannot load them by mistake.
PLACEHOLDER_TOWER = b"not an onnx model: a catalogue-only bundle for recall tests and benchmarks"


@dataclass(frozen=True)
class SyntheticCatalogue:
    """Item embeddings drawn around cluster centres, and the centres they were drawn from."""

    embeddings: np.ndarray  # float32 [n_items, dim]
    clusters: np.ndarray  # int64 [n_items], the centre each item was drawn around
    centres: np.ndarray  # float32 [n_clusters, dim], unit norm

    @property
    def item_ids(self) -> list[str]:
        return [f"i{i}" for i in range(len(self.embeddings))]


def gaussian_mixture_catalogue(
    n_items: int,
    dim: int,
    *,
    n_clusters: int = 2000,
    spread: float = 0.5,
    norm_sigma: float = 0.3,
    seed: int = 0,
    chunk: int = 262_144,
) -> SyntheticCatalogue:
    """Draw ``n_items`` vectors: a unit centre plus Gaussian noise of norm ~``spread``, scaled by
    a log-normal popularity factor; cluster sizes follow a Zipf-like law."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.7
    clusters = rng.choice(n_clusters, size=n_items, p=weights / weights.sum())
    embeddings = np.empty((n_items, dim), dtype=np.float32)
    noise_scale = spread / np.sqrt(dim)
    for start in range(0, n_items, chunk):
        stop = min(start + chunk, n_items)
        part = centres[clusters[start:stop]] + noise_scale * rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
        part *= rng.lognormal(0.0, norm_sigma, size=(stop - start, 1)).astype(np.float32)
        embeddings[start:stop] = part
    return SyntheticCatalogue(embeddings=embeddings, clusters=clusters, centres=centres)


def interest_vectors(
    catalogue: SyntheticCatalogue,
    n_users: int,
    k: int,
    *,
    spread: float = 0.5,
    seed: int = 1,
) -> np.ndarray:
    """float32 [n_users, k, dim]: each interest points near a distinct cluster centre, squashed
    to norm below one as the MIND tower's squash does."""
    rng = np.random.default_rng(seed)
    n_clusters, dim = catalogue.centres.shape
    picks = np.stack([rng.choice(n_clusters, size=k, replace=False) for _ in range(n_users)])
    vectors = catalogue.centres[picks] + (spread / np.sqrt(dim)) * rng.standard_normal(
        (n_users, k, dim), dtype=np.float32
    )
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    squash = norms**2 / (1.0 + norms**2) / np.maximum(norms, 1e-12)
    return (vectors * squash).astype(np.float32)


def write_catalogue_bundle(
    out_root: Path,
    embeddings: np.ndarray,
    *,
    k: int = 4,
    item_ids: Sequence[str] | None = None,
    make_current: bool = True,
    metrics: dict[str, object] | None = None,
    item_categories: Sequence[str] | None = None,
) -> Path:
    """Write a catalogue-only bundle (item embeddings and ids, a placeholder tower, and the
    items' category labels when given) with the real bundle writer; item ids default to
    ``i0``, ``i1``..."""
    n, dim = embeddings.shape
    return write_bundle(
        out_root,
        onnx_model=PLACEHOLDER_TOWER,
        item_embeddings=embeddings,
        item_ids=list(item_ids) if item_ids is not None else [f"i{i}" for i in range(n)],
        model={"kind": "mind", "dim": dim, "k": k, "max_len": 50, "routing_iterations": 3},
        metrics={"note": "synthetic catalogue, placeholder tower", **(metrics or {})},
        make_current=make_current,
        item_categories=item_categories,
    )
