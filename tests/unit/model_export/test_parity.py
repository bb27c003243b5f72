"""The exported ONNX tower computes what the torch tower computes, on awkward batches too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_export.export import export_onnx
from model_export.model import MindConfig, build_tower
from model_export.onnx_tower import OnnxUserTower

N_ITEMS = 80
MAX_LEN = 12
TOLERANCE = 1e-5


def make_tower(**overrides):
    rng = np.random.default_rng(7)
    config = dict(
        n_items=N_ITEMS,
        dim=16,
        k=4,
        max_len=MAX_LEN,
        seed=11,
        item_features={"cat": [9, 2], "brand": [5, 1]},
    )
    config.update(overrides)
    tables = {
        "cat": rng.integers(0, 9, size=(N_ITEMS + 1, 2)),
        "brand": rng.integers(0, 5, size=(N_ITEMS + 1, 1)),
    }
    tower = build_tower(MindConfig(**config), tables)
    # Larger weights than the init: sharper routing, so parity is checked where it is harder.
    with torch.no_grad():
        for param in tower.parameters():
            param.mul_(3.0)
    return tower.eval()


def awkward_batches(rng):
    """Batches that have broken exports before: length 1, all padding, full rows, batch 1."""

    def batch(lengths, width):
        seq = np.zeros((len(lengths), width), dtype=np.int64)
        for row, n in enumerate(lengths):
            seq[row, :n] = rng.integers(1, N_ITEMS + 1, size=n)
        return seq

    yield batch([1], 1)
    yield batch([0], 1)
    yield batch([0], MAX_LEN)
    yield batch([MAX_LEN], MAX_LEN)
    yield batch([1, 0, MAX_LEN, 2, 3, 4, 8, 16 % MAX_LEN, 7], MAX_LEN)
    yield batch([3, 5], 5)
    yield batch(list(rng.integers(0, MAX_LEN + 1, size=64)), MAX_LEN)
    yield batch(list(rng.integers(0, 30, size=16)), 30)  # longer than max_len still runs
    repeated = batch([MAX_LEN], MAX_LEN)
    repeated[0, :] = repeated[0, 0]  # one item many times
    yield repeated


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"kind": "youtube_dnn"},
        {"k": 1},
        {"dynamic_k": False},
        {"head_hidden": -1},
        {"item_features": {}},
        {"routing_cosine_scale": 10.0},
        {"behaviours_per_interest": 3},
        {"kind": "comirec_dr", "head_hidden": -1},
        {"kind": "comirec_sa", "head_hidden": -1},
        {"kind": "comirec_sa", "dynamic_k": False},
    ],
    ids=[
        "mind",
        "youtube_dnn",
        "mind_k1",
        "static_k",
        "no_head",
        "no_features",
        "mind_cosine_routing",
        "mind_per_interest_k",
        "comirec_dr",
        "comirec_sa",
        "comirec_sa_static_k",
    ],
)
def test_onnx_matches_torch(overrides):
    tower = make_tower(**overrides)
    runtime = OnnxUserTower(export_onnx(tower), threads=1)
    rng = np.random.default_rng(0)
    for seq in awkward_batches(rng):
        with torch.no_grad():
            want, want_mask = tower(torch.from_numpy(seq))
        got, got_mask = runtime(seq)
        assert got.dtype == np.float32 and got_mask.dtype == np.bool_
        assert got.shape == tuple(want.shape)
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got_mask, want_mask.numpy())
        assert np.abs(got - want.numpy()).max() <= TOLERANCE, seq.shape
        again, again_mask = runtime(seq)
        np.testing.assert_array_equal(again, got)
        np.testing.assert_array_equal(again_mask, got_mask)


@pytest.mark.slow
def test_dynamo_exporter_matches_torch_too():
    tower = make_tower()
    runtime = OnnxUserTower(export_onnx(tower, exporter="dynamo"), threads=1)
    for seq in awkward_batches(np.random.default_rng(1)):
        with torch.no_grad():
            want, want_mask = tower(torch.from_numpy(seq))
        got, got_mask = runtime(seq)
        np.testing.assert_array_equal(got_mask, want_mask.numpy())
        assert np.abs(got - want.numpy()).max() <= TOLERANCE, seq.shape


def test_onnx_rows_do_not_depend_on_the_rest_of_the_batch():
    tower = make_tower()
    runtime = OnnxUserTower(export_onnx(tower), threads=1)
    seq = np.zeros((5, MAX_LEN), dtype=np.int64)
    for row, n in enumerate([1, 4, 9, 12, 0]):
        seq[row, :n] = np.arange(1, n + 1) * 3
    together, _ = runtime(seq)
    for row in range(5):
        n = max(1, int((seq[row] > 0).sum()))
        alone, _ = runtime(seq[row : row + 1, :n])
        assert np.abs(alone[0] - together[row]).max() <= TOLERANCE


def test_export_refuses_a_tower_with_user_features():
    from model_export.exceptions import ModelExportError

    tower = make_tower(user_features={"age": 4})
    with pytest.raises(ModelExportError, match="user-profile"):
        export_onnx(tower)


def test_onnx_graph_declares_the_serving_contract():
    import onnx

    model = onnx.load_from_string(export_onnx(make_tower()))
    (inp,) = model.graph.input
    assert inp.name == "item_seq"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", "seq"]
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert outputs["interests"].elem_type == onnx.TensorProto.FLOAT
    assert outputs["interest_mask"].elem_type == onnx.TensorProto.BOOL
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
