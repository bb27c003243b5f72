"""The serving tower against the torch model it was exported from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_export.bundle import TOWER_INPUT, TOWER_OUTPUTS
from stream.exceptions import TowerError
from stream.tower import CPU, CUDA, PAD_STEP, UserTower, choose_providers, pad_widths


@pytest.fixture(scope="module")
def tower(tiny_bundle: Path) -> UserTower:
    return UserTower.load(tiny_bundle, provider="auto", threads=1)


def _torch_interests(bundle: Path, indices: list[int]) -> np.ndarray:
    """Independent reference: the torch tower the bundle was exported from, rebuilt."""
    import torch

    from model_export.bundle import load_bundle
    from model_export.model import MindConfig, build_tower

    config = load_bundle(bundle).config["config"]
    model = build_tower(MindConfig(**config)).eval()
    seq = torch.tensor([indices], dtype=torch.int64)
    with torch.no_grad():
        interests, mask = model(seq)
    return interests[0][mask[0]].numpy()


def test_matches_torch_with_unknown_ids_skipped(tower: UserTower, tiny_bundle: Path) -> None:
    window = ["i3", "nope", "i7", "i7", "i30", "gone", "i1", "i2", "i5", "i9"]
    [result] = tower.compute([window])
    assert result.n_unknown == 2 and result.n_known == 8
    want = _torch_interests(tiny_bundle, [4, 8, 8, 31, 2, 3, 6, 10])
    assert result.vectors.shape == want.shape == (3, 8)  # floor(log2 8) = 3 interests
    assert np.abs(result.vectors - want).max() <= 1e-5


def test_keeps_the_newest_max_len_known(tower: UserTower, tiny_bundle: Path) -> None:
    window = [f"i{n % 40}" for n in range(30)] + ["unknown"]
    seq, unknown = tower.encode([window])
    assert tower.max_len == 12
    assert seq[0].tolist() == [n % 40 + 1 for n in range(18, 30)]
    assert unknown.tolist() == [1]
    [result] = tower.compute([window])
    want = _torch_interests(tiny_bundle, [n % 40 + 1 for n in range(18, 30)])
    assert np.abs(result.vectors - want).max() <= 1e-5


def test_result_does_not_depend_on_the_batch(tower: UserTower) -> None:
    rng = np.random.default_rng(0)
    windows = [[f"i{j}" for j in rng.integers(0, 40, size=rng.integers(1, 20))] for _ in range(50)]
    together = tower.compute(windows)
    for window, joint in zip(windows[:10], together[:10], strict=True):
        [alone] = tower.compute([window])
        assert alone.k == joint.k
        assert np.abs(alone.vectors - joint.vectors).max() <= 1e-6
    tower.max_batch = 7
    try:
        chunked = tower.compute(windows)
    finally:
        tower.max_batch = 1024
    assert all(np.array_equal(a.vectors, b.vectors) for a, b in zip(chunked, together, strict=True))


def test_pad_widths_are_a_fixed_ladder_capped_at_max_len() -> None:
    assert PAD_STEP == 8
    lengths = np.array([0, 1, 7, 8, 9, 16, 17, 49, 50])
    assert pad_widths(lengths, 50).tolist() == [8, 8, 8, 8, 16, 16, 24, 50, 50]
    assert pad_widths(lengths, 12).tolist() == [8, 8, 8, 8, 12, 12, 12, 12, 12]
    assert pad_widths(np.array([1, 3]), 3).tolist() == [3, 3]


def test_short_padding_gives_the_max_len_result(tower: UserTower) -> None:
    # every width of the ladder against the graph run on rows padded to max_len
    rng = np.random.default_rng(1)
    windows = [[f"i{j}" for j in rng.integers(0, 40, size=n)] for n in range(1, 16)]
    results = tower.compute(windows)
    seq, _ = tower.encode(windows)
    assert seq.shape[1] == tower.max_len
    interests, mask = tower.session.run(list(TOWER_OUTPUTS), {TOWER_INPUT: seq})
    for row, result in enumerate(results):
        want = interests[row][mask[row].astype(bool)]
        assert result.vectors.shape == want.shape
        assert np.abs(result.vectors - want).max() <= 1e-6


def test_windows_without_known_items_have_no_interests(tower: UserTower) -> None:
    empty, known = tower.compute([["x", "y"], ["i1"]])
    assert empty.k == 0 and empty.vectors.shape == (0, 8) and empty.n_unknown == 2
    assert known.k == 1 and known.n_known == 1
    assert tower.compute([]) == []


def test_rows_without_known_items_between_others_in_chunks(tower: UserTower) -> None:
    windows = [["i1", "i2"], ["x"], [], ["i3", "y", "i4", "i5"], ["z", "w"], ["i6"] * 20]
    alone = [tower.compute([w])[0] for w in windows]
    tower.max_batch = 2
    try:
        together = tower.compute(windows)
    finally:
        tower.max_batch = 1024
    assert [r.k > 0 for r in together] == [True, False, False, True, False, True]
    for a, b in zip(alone, together, strict=True):
        assert (a.n_known, a.n_unknown, a.k) == (b.n_known, b.n_unknown, b.k)
        assert b.vectors.dtype == np.float32 and b.vectors.shape == (b.k, tower.dim)
        assert np.abs(a.vectors - b.vectors).max(initial=0.0) <= 1e-6
    assert [r.n_unknown for r in together] == [0, 1, 0, 1, 2, 0]


def test_provider_choice() -> None:
    assert choose_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers("auto", [CPU]) == [CPU]
    assert choose_providers("cpu", [CUDA, CPU]) == [CPU]
    with pytest.raises(TowerError, match="onnxruntime-gpu"):
        choose_providers("cuda", [CPU])
    with pytest.raises(TowerError):
        choose_providers("tpu", [CPU])


def test_provider_in_use_is_exposed(tower: UserTower) -> None:
    import onnxruntime as ort

    expected = CUDA if CUDA in ort.get_available_providers() else CPU
    assert tower.provider == expected


def test_stream_never_imports_torch() -> None:
    code = (
        "import sys, stream.tower, stream.record, stream.window, stream.events, "
        "stream.deadletter; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
