"""The multi-interest diagnosis: its pure parts on hand-made arrays, and the command on a
tiny trained tower."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model_export import diagnose
from model_export.dataset import primary_category
from model_export.retrieval import NO_ID


def test_length_buckets_follow_the_edges():
    assert diagnose.length_bucket_labels((4, 8)) == ["<4", "4-7", ">=8"]
    assert diagnose.length_buckets(np.array([1, 4, 7, 8, 100]), (4, 8)).tolist() == [0, 1, 1, 2, 2]


def test_owner_is_the_best_active_interest():
    interests = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    items = np.array([[1, 2, 0]])  # model indices; 0 = empty slot
    vectors = np.array([[0.0, 0.0], [2.0, 1.0], [1.0, 3.0]])
    both = diagnose.interest_owner(interests, np.array([[True, True]]), vectors, items)
    first = diagnose.interest_owner(interests, np.array([[True, False]]), vectors, items)
    assert both.tolist() == [[0, 1, -1]]
    assert first.tolist() == [[0, 0, -1]]


def test_shares_rank_interests_by_their_part_of_the_list():
    owner = np.array([[1, 1, 1, 0], [0, 0, 0, 0]])
    rel = np.array([[False, False, False, True], [True, False, False, False]])
    shares = diagnose.shares_by_rank(owner, rel, np.array([2, 1]), k=2)
    # Only the first user has two interests: interest 1 holds 3/4 of its list, interest 0
    # the one hit.
    assert shares["list"] == [0.75, 0.25]
    assert shares["hits"] == [0.0, 1.0]


def test_oracle_counts_a_hit_in_any_single_interest_list():
    per_interest = np.array([[[1, 2], [3, 4]], [[5, 6], [NO_ID, NO_ID]]])
    hits = diagnose.oracle_single_interest(per_interest, [np.array([4]), np.array([9])])
    assert hits.tolist() == [True, False]


def test_capsule_ownership_and_routing_movement():
    weights = np.array([[[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.5, 0.5]]])
    seq_mask = np.array([[True, True, True, False]])
    assert diagnose.capsule_ownership(weights, seq_mask, np.array([2])) == pytest.approx(
        [2 / 3, 1 / 3]
    )
    initial = np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]])
    final = initial + np.array([[[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [9.0, 0.0]]])
    moved = diagnose.routing_movement(initial, final, weights, seq_mask)
    assert moved["top_capsule_changed"] == pytest.approx(1 / 3)
    assert moved["mean_abs_logit_change"] == pytest.approx(2 / 6)  # one change of 2, 6 logits
    assert moved["mean_largest_weight"] == pytest.approx((0.9 + 0.8 + 0.7) / 3)


def test_round_robin_merge_takes_each_interest_in_turn():
    from model_export.retrieval import merge_by_best_score

    ids = np.array([[[1, 2, 3], [7, 8, 9]]])
    scores = np.array([[[9.0, 8.0, 7.0], [1.0, 0.5, 0.1]]], dtype=np.float32)
    interests = np.ones((1, 2, 2), dtype=np.float32)
    best, _ = merge_by_best_score(ids, scores, 4)
    turns, _ = merge_by_best_score(ids, diagnose.merge_scores(scores, interests, "round_robin"), 4)
    assert best.tolist() == [[1, 2, 3, 7]]
    assert turns.tolist() == [[1, 7, 2, 8]]


def test_command_on_a_tiny_trained_tower(tmp_path, capsys):
    from model_export.checkpoint import save_checkpoint
    from model_export.model import MindConfig, build_tower
    from model_export.train import TrainConfig, train

    rng = np.random.default_rng(0)
    lines = [
        " ".join(map(str, [u, *rng.integers(1, 31, size=rng.integers(4, 40))]))
        for u in range(1, 41)
    ]
    data = tmp_path / "tiny.txt"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from model_export.workflow import DataSpec, load_data, make_split

    spec = DataSpec(path=str(data), format="amazon")
    interactions, _ = load_data(spec)
    parts = make_split(interactions, spec)
    tower = build_tower(MindConfig(n_items=interactions.n_items, dim=8, k=4, max_len=20))
    result = train(tower, parts.train.sequences, TrainConfig(epochs=2, negatives=10))
    save_checkpoint(tmp_path / "ckpt", tower, interactions.item_ids, {"result": result.to_json()})
    torch.set_num_threads(1)
    out = tmp_path / "diag.json"
    code = diagnose.main(
        [
            "--data",
            str(data),
            "--format",
            "amazon",
            "--checkpoint",
            f"m={tmp_path / 'ckpt'}",
            "--checkpoint",
            f"seeds={tmp_path / 'ckpt'}",
            "--checkpoint",
            f"seeds={tmp_path / 'ckpt'}",
            "--bootstrap-against",
            "m",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    full = json.loads(out.read_text())
    # Checkpoints sharing a name are seeds of one model: reported one by one, compared by mean.
    assert set(full["models"]) == {"m", "seeds/1", "seeds/2"}
    seeds = full["mean_over_checkpoints"]["seeds"]
    assert seeds["checkpoints"] == 2 and seeds["paired_bootstrap"]["difference"] == 0.0
    assert seeds["paired_bootstrap_recall@50"]["difference"] == 0.0
    report = full["models"]["m"]
    # One target per user (leave-last-out): recall is the hit rate.
    assert report["recall@50"] == report["hit_rate@50"] == seeds["recall@50"]
    assert report["oracle_single_interest_hit_rate@50"] >= report["hit_rate@50"]
    assert sum(b["users"] for b in report["by_length"].values()) == report["users"] == 40
    assert len(report["curves"]) == 2 and report["curves"][0]["train_loss"] > 0
    assert "routing" in report and "oracle single interest" in capsys.readouterr().out

    # A checkpoint trained on the ComiRec user split is refused on another split, where its
    # training users would be scored as test users.
    info = {"result": result.to_json(), "data": {"protocol": "comirec", "split_seed": 0}}
    save_checkpoint(tmp_path / "comirec", tower, interactions.item_ids, info)
    argv = ["--data", str(data), "--format", "amazon", "--checkpoint", f"c={tmp_path / 'comirec'}"]
    with pytest.raises(SystemExit) as exit_info:
        diagnose.main(argv)
    assert exit_info.value.code == 2
    assert "trained on the comirec split" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        diagnose.main([*argv, "--protocol", "comirec", "--split-seed", "1"])
    assert "--split-seed 0" in capsys.readouterr().err
    # ... and on another fold of the same shuffle (a checkpoint without a fold is fold 0).
    with pytest.raises(SystemExit):
        diagnose.main([*argv, "--protocol", "comirec", "--split-fold", "1"])
    assert "--split-fold 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # leave-last-out has no user split to fold
        diagnose.main([*argv, "--split-fold", "1"])
    assert "--split-fold" in capsys.readouterr().err
    assert diagnose.main([*argv, "--protocol", "comirec", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["split_fold"] == 0
    per_user = written["per_user"]
    assert len(per_user["users"]) == len(per_user["recall"]["c"]) == written["models"]["c"]["users"]
    assert np.mean(per_user["recall"]["c"]) == pytest.approx(written["models"]["c"]["recall@50"])
    comirec = written["models"]["c"]
    # Several targets per user: a user with a hit need not have all targets found.
    assert comirec["recall@50"] <= comirec["hit_rate@50"]


def test_aggregation_sweep_trades_hits_for_category_spread():
    # One user; items 1-3 share category 1 and score highest, item 4 is the target, category 2.
    pool_ids = np.array([[1, 2, 3, 4]])
    pool_scores = np.array([[4.0, 3.9, 3.8, 1.0]], dtype=np.float32)
    categories = np.array([0, 1, 1, 1, 2])
    sweep = diagnose.aggregation_sweep(
        pool_ids, pool_scores, [np.array([4])], categories, 2, [0.0, 0.5, 0.9]
    )
    assert sweep["0"] == {"hit_rate@2": 0.0, "diversity@2": 0.0}
    assert sweep["0.5"] == sweep["0"]  # 0.5 * 3.9 - 0.5 * 1 still beats 0.5 * 1.0
    assert sweep["0.9"] == {"hit_rate@2": 1.0, "diversity@2": 1.0}
    assert primary_category({}) is None
    assert primary_category({"genre": np.array([[0, 0], [3, 1]])}).tolist() == [0, 3]


def test_paired_bootstrap_finds_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(1)
    base = rng.random(2000) < 0.2
    better = base | (rng.random(2000) < 0.1)  # strictly more hits, same users
    boot = diagnose.paired_bootstrap(better, base, samples=500)
    assert boot["difference"] > 0 and boot["ci95_low"] > 0 and boot["p_value"] < 0.01
    same = diagnose.paired_bootstrap(base, base, samples=200)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="same users"):
        diagnose.paired_bootstrap(base, base[:10])


def test_mean_hits_average_the_seeds_of_each_name():
    runs = [
        ("a", np.array([True, False, True])),
        ("b", np.array([False, False, True])),
        ("a", np.array([True, True, False])),
    ]
    means = diagnose.mean_hits_by_name(runs)
    assert list(means) == ["a", "b"]
    np.testing.assert_allclose(means["a"], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(means["b"], [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="different users"):
        diagnose.mean_hits_by_name([("a", np.zeros(3)), ("a", np.zeros(4))])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lambdas", "0,1.5"], "must be in [0, 1]"),
        (["--lambdas", "-0.1"], "must be in [0, 1]"),
        (["--lambdas", "nan"], "must be in [0, 1]"),
        (["--lambdas", "0,a"], "expected numbers"),
        (["--bootstrap-against", "other"], "no such --checkpoint"),
    ],
)
def test_command_refuses_bad_flags_before_reading_data(flags, message, tmp_path, capsys):
    # The data path does not exist: the refusal has to come before anything is loaded.
    argv = ["--data", str(tmp_path / "absent"), "--checkpoint", f"m={tmp_path / 'absent'}"]
    with pytest.raises(SystemExit) as exit_info:
        diagnose.main([*argv, *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _fold_report(fold, users, hits, recall, valid=(0.2, 0.1)):
    return {
        "data": "toy",
        "protocol": "comirec",
        "part": "test",
        "n": 50,
        "split_seed": 0,
        "split_fold": fold,
        "models": {"a": {"valid_best": valid[0]}, "b": {"valid_best": valid[1]}},
        "per_user": {
            "users": users,
            "hits": {"a": hits[0], "b": hits[1]},
            "recall": {"a": recall[0], "b": recall[1]},
        },
    }


def test_pool_folds_bootstraps_over_the_union_of_the_folds_users():
    folds = [
        _fold_report(0, [0, 3], ([1, 1], [0, 1]), ([0.5, 1.0], [0.0, 0.5])),
        _fold_report(1, [1, 2, 4], ([1, 0, 1], [1, 0, 0]), ([1.0, 0.0, 0.2], [1.0, 0.0, 0.0])),
    ]
    pooled = diagnose.pool_folds(folds, "b", samples=200)
    assert pooled["users"] == 5 and pooled["folds"] == [0, 1]
    a, b = pooled["models"]["a"], pooled["models"]["b"]
    assert a["hit_rate@50"] == pytest.approx(4 / 5) and b["hit_rate@50"] == pytest.approx(2 / 5)
    assert a["recall@50"] == pytest.approx(2.7 / 5) and b["recall@50"] == pytest.approx(1.5 / 5)
    # The same bootstrap as over one evaluation set holding every user.
    expected = diagnose.paired_bootstrap(
        np.array([0.5, 1.0, 1.0, 0.0, 0.2]), np.array([0.0, 0.5, 1.0, 0.0, 0.0]), samples=200
    )
    assert a["paired_bootstrap_recall@50"] == expected
    assert a["paired_bootstrap"]["difference"] == pytest.approx(2 / 5)
    assert "paired_bootstrap" not in b  # the baseline is not compared with itself
    assert [row["users"] for row in pooled["by_fold"]] == [2, 3]
    assert pooled["by_fold"][1]["a"]["recall@50"] == pytest.approx(1.2 / 3)
    assert a["valid_best_mean_over_folds"] == pytest.approx(0.2)
    text = diagnose.pooled_text(pooled)
    assert "| pooled | 5 |" in text and "a vs b Recall@50" in text


def test_pool_folds_refuses_what_is_not_folds_of_one_split():
    one = _fold_report(0, [0, 1], ([1, 1], [0, 1]), ([1.0, 1.0], [0.0, 1.0]))
    with pytest.raises(ValueError, match="shares 1 users"):
        diagnose.pool_folds(
            [one, {**one, "split_fold": 1, "per_user": {**one["per_user"], "users": [1, 2]}}], "b"
        )
    with pytest.raises(ValueError, match="given twice"):
        diagnose.pool_folds([one, {**one, "per_user": {**one["per_user"], "users": [5, 6]}}], "b")
    with pytest.raises(ValueError, match=r"differ in \['split_seed'\]"):
        diagnose.pool_folds([one, {**one, "split_fold": 1, "split_seed": 1}], "b")
    with pytest.raises(ValueError, match="no per-user results"):
        diagnose.pool_folds([{k: v for k, v in one.items() if k != "per_user"}], "b")
    with pytest.raises(ValueError, match="not a model"):
        diagnose.pool_folds([one], "c")
    other = _fold_report(1, [7], ([1], [1]), ([1.0], [1.0]))
    other["per_user"]["hits"] = {"a": [1]}
    with pytest.raises(ValueError, match="fold 1 has models"):
        diagnose.pool_folds([one, other], "b")


def test_pool_folds_command(tmp_path, capsys):
    from model_export import experiments

    paths = []
    for fold, users in ((0, [0, 1]), (1, [2, 3])):
        path = tmp_path / f"fold{fold}.json"
        path.write_text(
            json.dumps(_fold_report(fold, users, ([1, 0], [0, 0]), ([0.5, 0.0], [0.0, 0.0])))
        )
        paths.append(str(path))
    out = tmp_path / "pooled.json"
    assert experiments.main(["pool-folds", "--against", "b", "--json", str(out), *paths]) == 0
    assert json.loads(out.read_text())["users"] == 4
    assert "| pooled | 4 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        experiments.main(["pool-folds", "--against", "b", paths[0], paths[0]])
    assert "given twice" in capsys.readouterr().err
