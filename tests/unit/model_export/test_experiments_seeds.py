"""The seed summary of `mindstream train --results` files: grouping by file name and split
protocol, mean ± std, the time to the best validation epoch against the 10-minute target."""

from __future__ import annotations

import pytest

from model_export.experiments import seed_group, seed_markdown, seed_summary


def test_file_names_group_by_data_set_and_model():
    assert seed_group("lastfm-sa-k4-max.json") == ("lastfm", "sa-k4-max")
    assert seed_group("lastfm-sa-k4-max-seed2.json") == ("lastfm", "sa-k4-max")
    assert seed_group("ml-latest-small-mind-k1-seed1.json") == ("ml-latest-small", "mind-k1")
    assert seed_group("ml-latest-small-youtube.json") == ("ml-latest-small", "youtube")
    # A fold of the user split tests other users: never grouped with another fold.
    assert seed_group("lastfm-sa-k1-comirec-fold3.json") == ("lastfm", "sa-k1 fold3")
    assert seed_group("lastfm-sa-k1-comirec-fold3-seed1.json") == ("lastfm", "sa-k1 fold3")
    assert seed_group("lastfm-sa-k4-max-comirec-seed1.json") == ("lastfm", "sa-k4-max")
    assert seed_group("lastfm-sa-k1-leave-last-out.json") == ("lastfm", "sa-k1")


def run(seed, valid, hr50, best_epoch, elapsed, cosine=None, protocol=None, valid_metric=None):
    history = [{"epoch": e + 1, "elapsed_s": t} for e, t in enumerate(elapsed)]
    metrics = {"hit_rate@50": hr50, "hit_rate@20": hr50 / 2, "ndcg@50": 0.05, "ndcg@20": 0.03}
    metrics |= {"recall@50": hr50 / 2, "recall@20": hr50 / 4}
    extra = {} if protocol is None else {"protocol": protocol}
    if valid_metric is not None:
        extra["validation"] = {"metric": valid_metric}
    return {
        **extra,
        "model": {"kind": "comirec_sa", "k": 4, "seed": seed},
        "train": {
            "best_score": valid,
            "best_epoch": best_epoch,
            "history": history,
            "samples_per_second": 1000.0 + seed,
        },
        "test": {
            "comirec_sa": {
                "metrics": metrics,
                "interest_cosine": cosine,
                "mean_active_interests": 3.0,
            },
            "popularity": {"metrics": metrics, "interest_cosine": None},
        },
    }


def test_seeds_of_one_model_give_mean_std_and_time_to_best_epoch():
    rows = seed_summary(
        [
            ("lastfm-sa-k4-max.json", run(0, 0.20, 0.10, 2, [100, 200, 300], 0.5)),
            ("lastfm-sa-k4-max-seed1.json", run(1, 0.30, 0.20, 3, [100, 200, 650, 700], 0.7)),
            ("lastfm-youtube-seed1.json", run(1, 0.25, 0.15, 1, [50, 100])),
        ]
    )
    sa, youtube = rows
    assert (sa["data"], sa["model"], sa["seeds"]) == ("lastfm", "sa-k4-max", [0, 1])
    assert sa["protocol"] == "leave_last_out"  # a result without a protocol: leave-last-out
    assert sa["valid_metric"] == "hit_rate@50" and sa["valid_score"]["mean"] == pytest.approx(0.25)
    assert sa["hit_rate@50"]["std"] == pytest.approx(0.0707107, rel=1e-5)
    assert sa["seconds_to_best_epoch"]["values"] == [200.0, 650.0]
    assert sa["within_time_target"] is False  # one seed needed 650 s > 600 s
    assert sa["interest_cosine"]["mean"] == pytest.approx(0.6)
    assert youtube["within_time_target"] is True and youtube["interest_cosine"]["n"] == 0
    table = seed_markdown(rows)
    assert "| lastfm | sa-k4-max | 2 | 0.2500 ± 0.0707 (HR@50) | 0.0750 ± 0.0354 |" in table
    assert "425 ± 318 (> 600)" in table


def test_a_result_with_two_trained_models_is_refused():
    bad = run(0, 0.2, 0.1, 1, [10])
    bad["test"]["other"] = bad["test"]["comirec_sa"]
    with pytest.raises(ValueError, match="one trained model"):
        seed_summary([("lastfm-x.json", bad)])


def test_protocols_are_never_mixed_in_one_row():
    rows = seed_summary(
        [
            ("lastfm-sa-k1-seed1.json", run(1, 0.20, 0.10, 1, [10])),
            (
                "lastfm-sa-k1-comirec-seed1.json",
                run(1, 0.40, 0.60, 1, [10], protocol="comirec", valid_metric="recall@50"),
            ),
            (
                "lastfm-sa-k1-comirec-seed2.json",
                run(2, 0.50, 0.70, 1, [10], protocol="comirec", valid_metric="recall@50"),
            ),
        ]
    )
    comirec, leave_last_out = rows
    assert (comirec["protocol"], comirec["model"], comirec["seeds"]) == ("comirec", "sa-k1", [1, 2])
    assert comirec["valid_metric"] == "recall@50"
    assert comirec["valid_score"]["mean"] == pytest.approx(0.45)
    assert (leave_last_out["protocol"], leave_last_out["seeds"]) == ("leave_last_out", [1])
    table = seed_markdown(rows)
    assert table.index("protocol: comirec") < table.index("protocol: leave_last_out")
    assert "| lastfm | sa-k1 | 2 | 0.4500 ± 0.0707 (Recall@50) | 0.3250 ± 0.0354 |" in table


def test_a_file_named_for_another_protocol_is_refused():
    with pytest.raises(ValueError, match="named comirec but ran protocol leave_last_out"):
        seed_summary([("lastfm-sa-k1-comirec.json", run(0, 0.2, 0.1, 1, [10]))])


def test_seeds_that_chose_on_different_metrics_are_refused():
    a = run(1, 0.2, 0.1, 1, [10], protocol="comirec", valid_metric="recall@50")
    b = run(2, 0.2, 0.1, 1, [10], protocol="comirec", valid_metric="hit_rate@50")
    with pytest.raises(ValueError, match="different validation metrics"):
        seed_summary([("lastfm-m-comirec-seed1.json", a), ("lastfm-m-comirec-seed2.json", b)])
