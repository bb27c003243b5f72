"""How close an approximate item index comes to exact search: recall@k on given queries."""

from __future__ import annotations

import numpy as np

from mindstream.settings import Settings
from model_export.bundle import Bundle
from recall.index import ItemIndex, build_index, choose_spec


def recall_at_k(approx_rows: np.ndarray, exact_rows: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k found in its approximate top-k."""
    k = exact_rows.shape[1]
    hits = [
        len(set(a[a >= 0].tolist()) & set(e[e >= 0].tolist()))
        for a, e in zip(approx_rows, exact_rows, strict=True)
    ]
    return float(np.sum(hits) / (k * len(exact_rows)))


def recall_at_k_vs_exact(
    bundle: Bundle,
    item_index: ItemIndex,
    *,
    queries: np.ndarray | None = None,
    k: int = 50,
    n_queries: int = 1000,
    seed: int = 0,
) -> float:
    """recall@k of ``item_index`` against exact search over the same bundle; queries default to
    a random sample of the bundle's own item embeddings."""
    if item_index.version != bundle.version:
        raise ValueError(f"index of {item_index.version} measured against {bundle.version}")
    if queries is None:
        rng = np.random.default_rng(seed)
        picks = rng.choice(bundle.n_items, size=min(n_queries, bundle.n_items), replace=False)
        queries = bundle.item_embeddings[picks]
    k = min(k, bundle.n_items)
    exact = (
        item_index
        if item_index.exact
        else build_index(bundle, choose_spec(bundle.n_items, Settings(), "flat"), progress=False)
    )
    _, approx_rows = item_index.search(queries, k)
    _, exact_rows = exact.search(queries, k)
    return recall_at_k(approx_rows, exact_rows)
