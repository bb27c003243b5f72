"""The MIND tower and its pieces: routing, masks, dynamic K, pooling, label-aware attention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model_export.model import (
    MindConfig,
    build_tower,
    interest_count,
    label_aware_weights,
    squash,
)

N_ITEMS = 60


def tiny_tower(**overrides):
    config = dict(n_items=N_ITEMS, dim=8, k=4, max_len=20, seed=3)
    config.update(overrides)
    features = config.pop("features", None)
    tables = None
    if features:
        rng = np.random.default_rng(0)
        tables = {"cat": rng.integers(0, 5, size=(N_ITEMS + 1, 3))}
        config["item_features"] = {"cat": [5, 3]}
    return build_tower(MindConfig(**config), tables).eval()


def pad(rows, length):
    return torch.tensor([list(r) + [0] * (length - len(r)) for r in rows], dtype=torch.int64)


def test_squash_is_zero_at_zero_and_shrinks_below_one():
    s = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [1e-30, 0.0, 0.0]])
    out = squash(s)
    assert torch.equal(out[0], torch.zeros(3))
    assert out.isfinite().all()
    assert torch.allclose(out[1].norm(), torch.tensor(25.0 / 26.0))
    assert torch.allclose(out[1] / out[1].norm(), s[1] / 5.0)
    s.requires_grad_(True)
    squash(s).sum().backward()
    assert s.grad is not None and s.grad.isfinite().all()


def test_interest_count_matches_the_paper_formula():
    n = torch.arange(0, 300)
    for k in range(1, 7):
        got = interest_count(n, k).tolist()
        want = [max(1, min(k, math.floor(math.log2(v)))) if v > 0 else 1 for v in n.tolist()]
        assert got == want


@pytest.mark.parametrize("features", [False, True])
def test_padding_invariance(features):
    tower = tiny_tower(features=features)
    rows = [[5, 9, 11, 2, 7, 7, 30, 41, 12], [3], [1, 2, 3, 4]]
    with torch.no_grad():
        short, short_mask = tower(pad(rows, 9))
        long, long_mask = tower(pad(rows, 20))
        one = [tower(pad([r], len(r))) for r in rows]
    torch.testing.assert_close(short, long, rtol=0, atol=1e-6)
    assert torch.equal(short_mask, long_mask)
    for i, (interests, mask) in enumerate(one):
        torch.testing.assert_close(interests[0], short[i], rtol=0, atol=1e-6)
        assert torch.equal(mask[0], short_mask[i])


def test_interests_depend_on_the_multiset_of_behaviours_not_the_order():
    tower = tiny_tower()
    row = [5, 9, 11, 2, 7, 30, 41, 12, 50, 51]
    perm = list(np.random.default_rng(1).permutation(row))
    with torch.no_grad():
        a, _ = tower(pad([row], 12))
        b, _ = tower(pad([perm], 12))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_dynamic_k_masks_capsules_and_zeroes_inactive_ones():
    tower = tiny_tower()
    lengths = [0, 1, 2, 3, 4, 7, 8, 15, 16, 20]
    rows = [list(range(1, n + 1)) for n in lengths]
    with torch.no_grad():
        interests, mask = tower(pad(rows, 20))
    assert mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [1, 1, 1, 1, 2, 2, 3, 3, 4, 4]
    assert interests.isfinite().all()
    assert torch.equal(interests[~mask], torch.zeros_like(interests[~mask]))


def test_static_k_uses_every_capsule():
    tower = tiny_tower(dynamic_k=False)
    with torch.no_grad():
        _, mask = tower(pad([[1], [1, 2, 3, 4, 5]], 5))
    assert mask.all()


def test_all_padding_row_is_finite_with_finite_gradients():
    tower = tiny_tower()
    tower.train()
    seq = pad([[], [4, 5, 6, 7, 8]], 6)
    interests, mask = tower(seq)
    assert interests.isfinite().all()
    assert mask[0].tolist() == [True, False, False, False]
    labels = tower.item_vectors(torch.tensor([3, 4]))
    user = tower.user_vector(interests, mask, labels)
    (user * labels).sum().backward()
    for name, param in tower.named_parameters():
        assert param.grad is None or param.grad.isfinite().all(), name


def test_routing_is_deterministic_and_equal_in_train_and_eval_mode():
    tower = tiny_tower()
    seq = pad([[1, 2, 3, 4, 5, 6, 7, 8, 9]], 9)
    with torch.no_grad():
        a, _ = tower(seq)
        b, _ = tower(seq)
        tower.train()
        c, _ = tower(seq)
    assert torch.equal(a, b)
    assert torch.equal(a, c)
    # Another seed draws other fixed routing logits: the buffer really drives the routing.
    other = tiny_tower(seed=4)
    other.load_state_dict(
        {k: v for k, v in tower.state_dict().items() if k != "routing.routing_init"},
        strict=False,
    )
    with torch.no_grad():
        d, _ = other(seq)
    assert not torch.allclose(a, d)


def test_padding_behaviours_do_not_reach_the_capsules():
    tower = tiny_tower(head_hidden=-1)
    # Padding positions are masked even if the pad index had a non-zero vector.
    with torch.no_grad():
        tower.items.id_embedding.weight[0].fill_(100.0)
        a, _ = tower(pad([[1, 2, 3, 4]], 4))
        b, _ = tower(pad([[1, 2, 3, 4]], 10))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert (a.norm(dim=-1) < 1.0).all()  # no head: capsules are squashed


def test_item_pooling_averages_id_and_present_features():
    config = MindConfig(
        n_items=3, dim=4, k=2, item_features={"cat": [6, 3], "brand": [4, 1]}, seed=0
    )
    tables = {
        "cat": np.array([[0, 0, 0], [1, 2, 0], [0, 0, 0], [5, 5, 3]]),
        "brand": np.array([[0], [2], [0], [0]]),
    }
    tower = build_tower(config, tables)
    ids = tower.items.id_embedding.weight
    cat = tower.items.feature_embeddings["cat"].weight
    brand = tower.items.feature_embeddings["brand"].weight
    with torch.no_grad():
        got = tower.item_vectors()
    want1 = (ids[1] + (cat[1] + cat[2]) / 2 + brand[2]) / 3
    want3 = (ids[3] + (cat[5] + cat[5] + cat[3]) / 3) / 2
    torch.testing.assert_close(got[0], torch.zeros(4))
    torch.testing.assert_close(got[1], want1.detach())
    torch.testing.assert_close(got[2], ids[2].detach())
    torch.testing.assert_close(got[3], want3.detach())


def test_youtube_dnn_is_the_head_of_the_mean_behaviour():
    tower = tiny_tower(kind="youtube_dnn")
    seq = pad([[3, 4, 5], [7]], 4)
    with torch.no_grad():
        interests, mask = tower(seq)
        items = tower.item_vectors()
        assert tower.head is not None
        want0 = tower.head(items[[3, 4, 5]].mean(0))
        want1 = tower.head(items[7])
    assert interests.shape == (2, 1, 8)
    assert mask.all()
    torch.testing.assert_close(interests[0, 0], want0)
    torch.testing.assert_close(interests[1, 0], want1)


def test_mind_k1_routes_everything_into_one_capsule():
    tower = tiny_tower(k=1, head_hidden=-1)
    seq = pad([[3, 4, 5]], 3)
    with torch.no_grad():
        interests, mask = tower(seq)
        assert tower.routing is not None
        items = tower.item_vectors()
        want = squash(tower.routing.bilinear(items[[3, 4, 5]]).sum(0))
    assert mask.tolist() == [[True]]
    torch.testing.assert_close(interests[0, 0], want)


def test_user_profile_is_concatenated_before_the_head():
    tower = tiny_tower(user_features={"age": 5, "gender": 3})
    assert not tower.exportable
    seq = pad([[1, 2, 3, 4], [1, 2, 3, 4]], 4)
    with torch.no_grad():
        a, _ = tower(seq, torch.tensor([[1, 2], [3, 1]]))
    assert not torch.allclose(a[0], a[1])


# --- label-aware attention --------------------------------------------------------------------

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)
exponents = st.one_of(
    st.sampled_from([0.0, 1.0, 2.0, 1e3, 1e8, 1e30, 3.4e38, math.inf]),
    st.floats(min_value=0.0, max_value=1e38, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(
    scores=st.lists(finite, min_size=1, max_size=6),
    active=st.lists(st.booleans(), min_size=6, max_size=6),
    p=exponents,
)
def test_label_aware_weights_are_a_distribution_for_any_p(scores, active, p):
    k = len(scores)
    mask = torch.tensor(active[:k])
    mask[0] = True  # at least one interest is always active
    s = torch.tensor(scores, dtype=torch.float32, requires_grad=True)
    w = label_aware_weights(s.unsqueeze(0), mask.unsqueeze(0), p)[0]
    assert w.isfinite().all()
    assert (w >= 0).all()
    assert torch.equal(w[~mask], torch.zeros_like(w[~mask]))
    assert abs(w.sum().item() - 1.0) < 1e-5
    best = s.detach()[mask].max()
    # All weight lies on active interests, and the argmax always gets the largest weight.
    top = w[mask & (s.detach() == best)]
    assert (top >= w.max() - 1e-6).all()
    if p <= 1e3:
        (w * torch.arange(k, dtype=torch.float32)).sum().backward()
        assert s.grad is not None and s.grad.isfinite().all()


def test_label_aware_limits():
    s = torch.tensor([[-3.0, -1.0, -2.0, 5.0]])
    mask = torch.tensor([[True, True, True, False]])
    uniform = label_aware_weights(s, mask, 0.0)
    torch.testing.assert_close(uniform, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0]]))
    plain = label_aware_weights(s, mask, 1.0)
    torch.testing.assert_close(plain[0, :3], torch.softmax(s[0, :3], 0))
    hard = label_aware_weights(s, mask, math.inf)
    assert hard.tolist() == [[0.0, 1.0, 0.0, 0.0]]
    torch.testing.assert_close(label_aware_weights(s, mask, 1e6), hard)
    ties = label_aware_weights(torch.tensor([[2.0, 2.0, 1.0]]), torch.ones(1, 3, dtype=bool), 1e9)
    torch.testing.assert_close(ties, torch.tensor([[0.5, 0.5, 0.0]]))
    ties_hard = label_aware_weights(
        torch.tensor([[2.0, 2.0, 1.0]]), torch.ones(1, 3, dtype=bool), math.inf
    )
    torch.testing.assert_close(ties_hard, torch.tensor([[0.5, 0.5, 0.0]]))


def test_user_vector_with_hard_attention_picks_the_best_interest():
    tower = tiny_tower(pow_p=math.inf)
    interests = torch.tensor([[[1.0] * 8, [-1.0] * 8, [0.5] * 8, [9.0] * 8]])
    mask = torch.tensor([[True, True, True, False]])
    label = torch.full((1, 8), -1.0)
    torch.testing.assert_close(tower.user_vector(interests, mask, label), interests[:, 1])


def test_config_json_round_trip_keeps_infinite_p():
    config = MindConfig(n_items=5, pow_p=math.inf, item_features={"cat": [4, 2]})
    data = config.to_json()
    assert data["pow_p"] == "inf"
    assert MindConfig.from_json(data) == config


def test_config_rejects_bad_values():
    from model_export.exceptions import ModelExportError

    with pytest.raises(ModelExportError):
        MindConfig(n_items=5, kind="sasrec")
    with pytest.raises(ModelExportError):
        MindConfig(n_items=0)
    with pytest.raises(ModelExportError):
        MindConfig(n_items=5, pow_p=-1.0)
    with pytest.raises(ModelExportError):
        MindConfig(n_items=5, pow_p=math.nan)


def test_routing_detach_changes_gradients_not_outputs():
    seq = pad([[1, 2, 3, 4, 5, 6, 7, 8, 9]], 9)
    grads, outputs = [], []
    for detach in (True, False):
        tower = tiny_tower(routing_detach=detach, head_hidden=-1)
        interests, _ = tower(seq)
        interests.pow(2).sum().backward()
        assert tower.routing is not None
        grads.append(tower.routing.bilinear.weight.grad.clone())
        outputs.append(interests.detach())
    torch.testing.assert_close(outputs[0], outputs[1])
    assert not torch.allclose(grads[0], grads[1])
