"""Fixtures of the stream stage's unit tests: a tiny real bundle exported from the torch tower."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_ITEMS = 40


def build_tiny_bundle(out_root: Path, *, seed: int = 3, max_len: int = 12) -> Path:
    """Export a small random MIND tower (K=4, d=8) as a bundle; items are ``i0 .. i39``."""
    from model_export.export import export_bundle
    from model_export.model import MindConfig, build_tower

    config = MindConfig(n_items=TINY_ITEMS, dim=8, k=4, max_len=max_len, seed=seed)
    tower = build_tower(config).eval()
    return export_bundle(tower, [f"i{n}" for n in range(TINY_ITEMS)], out_root)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundles"))
