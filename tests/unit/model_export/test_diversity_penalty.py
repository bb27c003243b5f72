"""The interest-diversity penalty: its value on hand-made matrices, its weight in the training
loss (none at C = 0), the tower's training-only attention output, and the refusal of bad
weights before training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model_export.exceptions import ModelExportError
from model_export.model import MindConfig, build_tower, unit
from model_export.train import (
    TrainConfig,
    TrainingPositions,
    diversity_rows,
    max_scoring_loss,
    orthogonality_penalty,
    train,
)


def tower(**overrides):
    config = dict(n_items=40, dim=8, k=4, max_len=12, seed=3)
    config.update(overrides)
    return build_tower(MindConfig(**config))


def test_orthonormal_rows_cost_nothing():
    one_hot = torch.eye(5)[[0, 3, 1]].unsqueeze(0)  # 3 heads, each on its own behaviour
    assert orthogonality_penalty(one_hot, torch.ones(1, 3, dtype=torch.bool)).item() == 0.0


def test_penalty_on_hand_made_attention_maps():
    # User 1: heads (.5, .5, 0) and (0, 0, 1): A A^T - I = [[-.5, 0], [0, 0]] -> 0.25.
    # User 2: two heads (.5, .5, 0): A A^T - I = [[-.5, .5], [.5, -.5]] -> 1.0.
    attention = torch.tensor(
        [[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]]
    )
    mask = torch.ones(2, 2, dtype=torch.bool)
    assert orthogonality_penalty(attention[:1], mask[:1]).item() == pytest.approx(0.25)
    assert orthogonality_penalty(attention[1:], mask[1:]).item() == pytest.approx(1.0)
    assert orthogonality_penalty(attention, mask).item() == pytest.approx(0.625)  # batch mean


def test_inactive_interests_take_no_part():
    # The second head is inactive: only (.5 .5 0)'s own term (-.5)^2 counts, not the overlap.
    attention = torch.tensor([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]])
    mask = torch.tensor([[True, False]])
    assert orthogonality_penalty(attention, mask).item() == pytest.approx(0.25)


def test_on_unit_interests_it_is_the_sum_of_squared_pairwise_cosines():
    interests = unit(torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]]))
    mask = torch.tensor([[True, True, False]])
    # cos = 1 / sqrt 2 for the one pair, counted at (0, 1) and (1, 0): 2 * 0.5.
    assert orthogonality_penalty(interests, mask).item() == pytest.approx(1.0)


def test_the_cosine_form_charges_overlap_between_heads_not_their_spread():
    attention = torch.tensor(
        [[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]]
    )
    mask = torch.ones(2, 2, dtype=torch.bool)
    rows = diversity_rows(torch.zeros(2, 2, 4), attention, cosine=True)
    # User 1: disjoint heads, one of them spread over two behaviours: 0 (Lin's form: 0.25).
    assert orthogonality_penalty(rows[:1], mask[:1]).item() == pytest.approx(0.0)
    # User 2: the same head twice: cosine 1 at (0, 1) and (1, 0).
    assert orthogonality_penalty(rows[1:], mask[1:]).item() == pytest.approx(2.0)
    # Without attention maps (MIND, ComiRec-DR) the rows are the unit interests.
    interests = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])
    torch.testing.assert_close(
        diversity_rows(interests, None), torch.tensor([[[0.6, 0.8], [0.0, 1.0]]])
    )


@pytest.mark.parametrize("kind", ["mind", "comirec_dr", "comirec_sa", "youtube_dnn"])
def test_extract_is_forward_plus_the_attention_maps(kind):
    t = tower(kind=kind).eval()
    seq = torch.tensor([[3, 9, 4, 0, 0], [7, 1, 2, 5, 6]])
    interests, mask = t(seq)
    same, same_mask, attention = t.extract(seq)
    assert torch.equal(interests, same) and torch.equal(mask, same_mask)
    if kind == "comirec_sa":
        assert attention is not None and attention.shape == (2, 4, 5)
    else:
        assert attention is None


def first_step_loss(
    kind: str, c: float, sequences: list[np.ndarray], *, cosine: bool = False
) -> float:
    """The recorded loss of one full-softmax step over every training position at once."""
    config = TrainConfig(
        epochs=1,
        batch_size=10_000,
        max_steps=1,
        negatives=0,
        lr=0.01,
        interest_scoring="max",
        diversity_penalty=c,
        diversity_cosine=cosine,
    )
    result = train(tower(kind=kind), sequences, config)
    return float(result.history[0]["train_loss"])


@pytest.mark.parametrize(
    ("kind", "cosine"),
    [("comirec_sa", False), ("comirec_sa", True), ("mind", False), ("comirec_dr", False)],
)
def test_the_penalty_enters_the_loss_with_weight_c_and_not_at_all_at_zero(kind, cosine):
    rng = np.random.default_rng(1)
    sequences = [rng.integers(1, 41, size=rng.integers(3, 15)) for _ in range(30)]
    # The same batch (every position; the loss is a batch mean, so order does not matter)
    # scored by hand on a fresh tower of the same seed.
    fresh = tower(kind=kind)
    positions = TrainingPositions(sequences, fresh.config.max_len)
    histories, labels = positions.batch(np.arange(len(positions)))
    with torch.no_grad():
        interests, mask, attention = fresh.extract(torch.from_numpy(histories))
        labels_t = torch.from_numpy(labels)
        plain = max_scoring_loss(
            interests,
            mask,
            labels_t,
            fresh.item_vectors(labels_t),
            None,
            fresh.item_vectors()[1:],
            temperature=1.0,
            log_q=None,
        ).item()
        rows = diversity_rows(interests, attention, cosine=cosine)
        penalty = orthogonality_penalty(rows, mask).item()
    assert penalty > 0.01  # the check below can tell C = 0 from C = 1
    assert first_step_loss(kind, 0.0, sequences) == pytest.approx(plain, abs=2e-5)
    with_penalty = first_step_loss(kind, 1.0, sequences, cosine=cosine)
    assert with_penalty == pytest.approx(plain + penalty, abs=2e-5)


@pytest.mark.parametrize("c", [-0.1, math.nan, math.inf])
def test_a_bad_weight_is_refused(c):
    with pytest.raises(ModelExportError, match="diversity_penalty"):
        TrainConfig(diversity_penalty=c)


def test_the_cosine_form_without_a_penalty_is_refused():
    with pytest.raises(ModelExportError, match="diversity_cosine needs"):
        TrainConfig(diversity_cosine=True)


def test_the_cosine_form_on_a_routing_tower_is_refused_before_training():
    config = TrainConfig(diversity_penalty=0.5, diversity_cosine=True)
    with pytest.raises(ModelExportError, match="cosine form"):
        train(tower(kind="mind"), [np.array([1, 2, 3, 4])], config)


@pytest.mark.parametrize("overrides", [{"kind": "youtube_dnn"}, {"kind": "comirec_sa", "k": 1}])
def test_a_single_interest_tower_refuses_the_penalty_before_training(overrides):
    sequences = [np.array([1, 2, 3, 4])]
    with pytest.raises(ModelExportError, match="multi-interest kind with K >= 2"):
        train(tower(**overrides), sequences, TrainConfig(diversity_penalty=0.5))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--diversity-penalty=-1"], "--diversity-penalty must be a finite number >= 0"),
        (["--diversity-penalty=nan"], "--diversity-penalty must be a finite number >= 0"),
        (["--diversity-penalty=inf"], "--diversity-penalty must be a finite number >= 0"),
        (["--kind=youtube_dnn", "--diversity-penalty=0.1"], "has one interest"),
        (["--k=1", "--diversity-penalty=0.1"], "has one interest"),
        (["--diversity-cosine"], "--diversity-cosine needs"),
        (["--kind=mind", "--diversity-penalty=1", "--diversity-cosine"], "--diversity-cosine"),
    ],
)
def test_cli_refuses_bad_penalties_before_training(flags, message, tmp_path, capsys):
    from mindstream.app.cli import main

    code = main(["train", "--no-export", f"--run-dir={tmp_path / 'run'}", *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was trained
