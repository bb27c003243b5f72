"""The multi-interest options: ComiRec-DR/SA extractors, cosine routing agreement, the
per-interest K' cap, best-interest scoring in training, and the flags that refuse impossible
settings before training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_export.exceptions import ModelExportError
from model_export.model import MindConfig, build_tower, interest_count
from model_export.train import (
    TrainConfig,
    best_interest_scores,
    max_scoring_loss,
    sampled_softmax_loss,
    train,
)


def tower(**overrides):
    config = dict(n_items=40, dim=8, k=4, max_len=12, seed=3)
    config.update(overrides)
    return build_tower(MindConfig(**config)).eval()


def test_per_interest_cap_leaves_enough_behaviours_per_interest():
    n = torch.tensor([0, 1, 2, 4, 7, 8, 11, 12, 16, 100])
    assert interest_count(n, 4).tolist() == [1, 1, 1, 2, 2, 3, 3, 3, 4, 4]
    # m = 4: K' = min(log2 rule, floor(n / 4)), never below 1.
    assert interest_count(n, 4, per_interest=4).tolist() == [1, 1, 1, 1, 1, 2, 2, 3, 4, 4]


@pytest.mark.parametrize("kind", ["comirec_sa", "comirec_dr", "mind"])
def test_interests_ignore_padding_width(kind):
    t = tower(kind=kind, head_hidden=-1)
    seq = torch.tensor([[5, 9, 3, 0, 0, 0]])
    wide = torch.tensor([[5, 9, 3] + [0] * 9])
    with torch.no_grad():
        a, mask_a = t(seq)
        b, mask_b = t(wide)
    torch.testing.assert_close(a, b)
    assert mask_a.tolist() == mask_b.tolist() == [[True, False, False, False]]


def test_self_attention_puts_no_weight_on_padding_and_sums_to_one():
    t = tower(kind="comirec_sa", head_hidden=-1)
    assert t.attention is not None
    seq = torch.tensor([[5, 9, 3, 0, 0], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        attention = t.attention.attention(t.items(seq), seq > 0)
    assert attention.shape == (2, 4, 5)
    assert torch.all(attention[0, :, 3:] == 0)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4))


def test_self_attention_sees_recency_not_absolute_position():
    """The same behaviours, newest last, give the same interests at any history length."""
    t = tower(kind="comirec_sa", head_hidden=-1, dynamic_k=False)
    with torch.no_grad():
        torch.nn.init.normal_(t.attention.position.weight, std=3.0)
        short, _ = t(torch.tensor([[7, 8, 0, 0]]))
        newest_first, _ = t(torch.tensor([[8, 7, 0, 0]]))
    # Order matters (the recency embedding), padding does not (previous test).
    assert not torch.allclose(short, newest_first)


def test_comirec_dr_starts_from_zero_logits_and_has_one_map_per_interest():
    t = tower(kind="comirec_dr", head_hidden=-1)
    assert t.routing is not None
    assert torch.all(t.routing.routing_init == 0)
    assert t.routing.bilinear.weight.shape == (4 * 8, 8)
    seq = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]])
    with torch.no_grad():
        interests, mask = t(seq)
    assert mask.tolist() == [[True] * 4]
    unit = torch.nn.functional.normalize(interests[0], dim=-1)
    assert (unit @ unit.T - torch.eye(4)).abs().max() < 0.99  # the maps tell them apart


def test_cosine_agreement_sharpens_routing():
    seq = torch.arange(1, 17).unsqueeze(0)
    largest = []
    for scale in (0.0, 20.0):
        t = tower(routing_cosine_scale=scale, routing_init_std=0.1)
        with torch.no_grad():
            trace = t.routing.route(seq, t.items(seq), seq > 0)
        largest.append(float(trace.weights.max(-1).values.mean()))
    assert largest[1] > largest[0] + 0.1


def test_best_interest_scores_ignore_inactive_interests():
    interests = torch.tensor([[[1.0, 0.0], [0.0, 5.0]]])
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    both = best_interest_scores(interests, torch.tensor([[True, True]]), vectors)
    first = best_interest_scores(interests, torch.tensor([[True, False]]), vectors)
    assert both.tolist() == [[1.0, 5.0]]
    assert first.tolist() == [[1.0, 0.0]]


def test_max_scoring_with_one_interest_is_the_plain_sampled_softmax():
    gen = torch.Generator().manual_seed(0)
    user = torch.randn(6, 4, generator=gen)
    labels = torch.tensor([1, 2, 3, 4, 5, 6])
    label_vectors = torch.randn(6, 4, generator=gen)
    negatives = torch.tensor([2, 7, 8, 9])
    negative_vectors = torch.randn(4, 4, generator=gen)
    log_q = torch.log(torch.full((10,), 0.1))
    plain = sampled_softmax_loss(
        user, labels, label_vectors, negatives, negative_vectors, temperature=0.5, log_q=log_q
    )
    best = max_scoring_loss(
        user.unsqueeze(1),
        torch.ones(6, 1, dtype=torch.bool),
        labels,
        label_vectors,
        negatives,
        negative_vectors,
        temperature=0.5,
        log_q=log_q,
    )
    torch.testing.assert_close(plain, best)


@pytest.mark.parametrize("negatives", [0, 10])
def test_training_with_max_scoring_lowers_the_loss(negatives):
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 41, size=rng.integers(3, 20)) for _ in range(60)]
    t = tower(kind="comirec_sa", head_hidden=-1)
    result = train(
        t,
        sequences,
        TrainConfig(epochs=4, batch_size=32, lr=0.01, negatives=negatives, interest_scoring="max"),
    )
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "overrides",
    [{"pow_p": 0.0}, {"routing_cosine_scale": -1.0}, {"behaviours_per_interest": -2}, {"k": 0}],
)
def test_impossible_model_settings_are_refused(overrides):
    with pytest.raises(ModelExportError):
        MindConfig(n_items=5, **overrides)


def test_unknown_interest_scoring_is_refused():
    with pytest.raises(ModelExportError, match="interest_scoring"):
        TrainConfig(interest_scoring="mean")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--k=0"], "--k must be >= 1"),
        (["--lr=0"], "--lr must be"),
        (["--routing-cosine-scale=-1"], "--routing-cosine-scale"),
        (["--kind=comirec_sa", "--routing-cosine-scale=5"], "has no routing"),
        (["--behaviours-per-interest=-1"], "--behaviours-per-interest"),
        (["--patience=-1"], "--patience must be >= 0"),
        (["--positions-per-user=-5"], "--positions-per-user must be >= 0"),
        (["--valid-users=-1"], "--valid-users must be >= 0"),
        (["--max-steps=-1"], "--max-steps must be >= 0"),
        (["--threads=-2"], "--threads must be >= 0"),
        (["--head-hidden=-2"], "--head-hidden must be >= -1"),
        (["--weight-decay=-0.1"], "--weight-decay must be"),
        (["--weight-decay=nan"], "--weight-decay must be"),
        (["--p=inf", "--interest-scoring=max"], "needs --interest-scoring label_aware"),
    ],
)
def test_cli_refuses_impossible_flags_before_training(flags, message, tmp_path, capsys):
    from mindstream.app.cli import main

    code = main(["train", "--no-export", f"--run-dir={tmp_path / 'run'}", *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was trained


@pytest.mark.parametrize("flags", [["--p=0"], ["--p=-1"], ["--kind=sasrec"], ["--no-such-flag"]])
def test_cli_rejects_bad_or_unknown_flags(flags, capsys):
    from mindstream.app.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", *flags])
    assert exit_info.value.code == 2


def test_a_data_set_too_small_to_split_is_refused(tmp_path):
    from model_export.workflow import DataSpec, load_data, make_split

    path = tmp_path / "tiny.txt"
    path.write_text("1 1 2\n2 3\n", encoding="utf-8")
    spec = DataSpec(path=str(path), format="amazon", protocol="comirec")
    data, _ = load_data(spec)
    with pytest.raises(ModelExportError, match="too small to split"):
        make_split(data, spec)


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [("comirec_sa", "comirec-sa-"), ("comirec_dr", "comirec-dr-"), ("youtube_dnn", "youtube-dnn-")],
)
def test_bundles_are_named_after_their_kind_and_serve_through_onnx(kind, prefix, tmp_path):
    from model_export.bundle import load_bundle
    from model_export.export import export_bundle
    from model_export.onnx_tower import OnnxUserTower

    t = tower(kind=kind, head_hidden=-1 if kind != "youtube_dnn" else 0)
    path = export_bundle(t, [f"i{j}" for j in range(1, 41)], tmp_path)
    bundle = load_bundle(path)
    assert path.name.startswith(prefix) and bundle.config["kind"] == kind
    seq = np.array([[3, 4, 5, 6, 7, 8, 9, 10, 11, 0]], dtype=np.int64)
    interests, mask = OnnxUserTower(bundle.onnx_path)(seq)
    with torch.no_grad():
        want, want_mask = t(torch.from_numpy(seq))
    np.testing.assert_allclose(interests, want.numpy(), atol=1e-5)
    assert mask.tolist() == want_mask.tolist()
