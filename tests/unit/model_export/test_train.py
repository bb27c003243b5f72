"""Training: example construction, the sampled-softmax loss, the sampler, determinism, early
stopping, checkpoints, and the train/evaluate/export commands end to end on tiny data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from model_export.checkpoint import load_checkpoint, save_checkpoint
from model_export.exceptions import ModelExportError
from model_export.model import MindConfig, build_tower
from model_export.sampler import PopularityNegativeSampler, item_counts
from model_export.train import (
    TrainConfig,
    TrainingPositions,
    full_softmax_loss,
    sampled_softmax_loss,
    train,
)


def random_sequences(n_users=40, n_items=30, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, n_items + 1, size=rng.integers(1, 25)) for _ in range(n_users)]


def test_positions_give_every_prefix_and_label():
    sequences = [np.array([5, 6, 7, 8]), np.array([9]), np.array([1, 2]), np.arange(1, 13)]
    max_len = 5
    positions = TrainingPositions(sequences, max_len)
    want = []
    for seq in sequences:
        for t in range(1, len(seq)):
            want.append((tuple(seq[max(0, t - max_len) : t]), int(seq[t])))
    assert len(positions) == len(want)
    histories, labels = positions.batch(np.arange(len(positions)))
    got = [
        (tuple(int(x) for x in h[h > 0]), int(y)) for h, y in zip(histories, labels, strict=True)
    ]
    assert got == want
    assert histories.shape[1] == max_len
    # Right padding: no item after the first zero.
    for h in histories:
        n = int((h > 0).sum())
        assert (h[:n] > 0).all() and (h[n:] == 0).all()


def test_epoch_order_covers_everything_or_caps_per_user():
    sequences = random_sequences()
    positions = TrainingPositions(sequences, 10)
    rng = np.random.default_rng(0)
    assert sorted(positions.epoch_order(rng).tolist()) == list(range(len(positions)))
    capped = positions.epoch_order(rng, per_user=2)
    per_user = np.bincount(positions.user[capped], minlength=len(sequences))
    want = np.minimum([max(len(s) - 1, 0) for s in sequences], 2)
    assert per_user.tolist() == want.tolist()
    assert len(set(capped.tolist())) == len(capped)


def test_sampled_softmax_matches_a_direct_computation():
    torch.manual_seed(0)
    user = torch.randn(3, 4)
    labels = torch.tensor([2, 5, 7])
    items = torch.randn(10, 4)
    negatives = torch.tensor([5, 1, 9, 5])
    log_q = torch.log(torch.softmax(torch.randn(10), 0))
    got = sampled_softmax_loss(
        user, labels, items[labels], negatives, items[negatives], temperature=0.5, log_q=log_q
    )
    total = 0.0
    for b in range(3):
        pos = float(user[b] @ items[labels[b]] / 0.5 - log_q[labels[b]])
        logits = [pos]
        for n in negatives.tolist():
            if n != int(labels[b]):  # accidental hits are not negatives
                logits.append(float(user[b] @ items[n] / 0.5 - log_q[n]))
        total += -pos + math.log(sum(math.exp(v) for v in logits))
    assert abs(float(got) - total / 3) < 1e-4
    plain = sampled_softmax_loss(
        user, labels, items[labels], negatives, items[negatives], temperature=1.0, log_q=None
    )
    assert float(plain) != pytest.approx(float(got))


def test_full_softmax_is_cross_entropy_over_the_catalogue():
    user = torch.randn(2, 3)
    all_items = torch.cat([torch.zeros(1, 3), torch.randn(6, 3)])
    labels = torch.tensor([1, 6])
    got = full_softmax_loss(user, labels, all_items, temperature=2.0)
    logits = user @ all_items[1:].T / 2.0
    want = -torch.log_softmax(logits, 1)[[0, 1], [0, 5]].mean()
    torch.testing.assert_close(got, want)


def test_sampler_follows_smoothed_popularity():
    counts = np.array([0, 100, 10, 0, 1000])
    sampler = PopularityNegativeSampler(counts, 200_000, alpha=0.75, rng=np.random.default_rng(1))
    draws = sampler.sample()
    assert draws.min() >= 1 and draws.max() <= 4
    freq = np.bincount(draws, minlength=5)[1:] / len(draws)
    want = (counts[1:] + 1.0) ** 0.75
    np.testing.assert_allclose(freq, want / want.sum(), atol=0.005)
    np.testing.assert_allclose(np.exp(sampler.log_q[1:]), want / want.sum(), rtol=1e-5)
    again = PopularityNegativeSampler(counts, 50, rng=np.random.default_rng(1)).sample()
    assert (
        again.tolist()
        == PopularityNegativeSampler(counts, 50, rng=np.random.default_rng(1)).sample().tolist()
    )
    assert item_counts([np.array([1, 1, 3])], 4).tolist() == [0, 2, 0, 1, 0]


def tiny(kind="mind", seed=0):
    return build_tower(MindConfig(n_items=30, dim=8, k=3, max_len=10, kind=kind, seed=seed))


@pytest.mark.parametrize("negatives", [0, 20])
def test_training_is_deterministic(negatives):
    sequences = random_sequences()
    config = TrainConfig(epochs=3, batch_size=32, lr=1e-2, negatives=negatives, seed=5)
    a, b = tiny(), tiny()
    result = train(a, sequences, config)
    train(b, sequences, config)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert result.epochs == 3 and result.steps > 0 and result.samples_per_second > 0
    assert math.isnan(result.best_score)


def test_loss_goes_down_on_learnable_data():
    # Every user repeats one of three fixed cycles: next-item prediction is learnable.
    cycles = [np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8, 9, 10]), np.array([11, 12, 13])]
    sequences = [np.tile(cycles[u % 3], 4) for u in range(60)]
    tower = tiny()
    losses = []
    from model_export import train as train_module

    original = train_module.sampled_softmax_loss

    def spy(*args, **kwargs):
        loss = original(*args, **kwargs)
        losses.append(float(loss.detach()))
        return loss

    train_module.sampled_softmax_loss = spy
    try:
        train(tower, sequences, TrainConfig(epochs=4, batch_size=32, lr=1e-2, negatives=20))
    finally:
        train_module.sampled_softmax_loss = original
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_early_stopping_keeps_the_best_weights():
    sequences = random_sequences()
    tower = tiny()
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.4, 0.9])
    snapshots = {}

    def validate(current):
        score = next(scores)
        snapshots[score] = {k: v.clone() for k, v in current.state_dict().items()}
        return score

    config = TrainConfig(epochs=6, batch_size=32, negatives=10, patience=2)
    result = train(tower, sequences, config, validate=validate)
    assert result.stopped_early and result.epochs == 4
    assert result.best_epoch == 2 and result.best_score == 0.5
    for name, value in tower.state_dict().items():
        assert torch.equal(value, snapshots[0.5][name]), name
    assert [r["valid"] for r in result.history] == [0.1, 0.5, 0.3, 0.2]


def _subnormal_survives() -> bool:
    return float(torch.tensor([1e-40], dtype=torch.float32) * 1.0) != 0.0


def test_training_flushes_subnormals_only_while_it_runs():
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormals")
    seen = []

    def validate(current):
        seen.append(_subnormal_survives())
        return 0.0

    train(tiny(), random_sequences(), TrainConfig(epochs=2, negatives=10), validate=validate)
    assert seen == [False, False]
    assert _subnormal_survives()
    with pytest.raises(ModelExportError):
        train(tiny(), [np.array([1])], TrainConfig(epochs=1))
    assert _subnormal_survives()


def test_training_refuses_data_without_examples():
    with pytest.raises(ModelExportError, match="no training examples"):
        train(tiny(), [np.array([1]), np.array([2])], TrainConfig(epochs=1))


def test_checkpoint_round_trip(tmp_path):
    tower = tiny(kind="youtube_dnn", seed=3)
    ids = [f"x{i}" for i in range(30)]
    path = save_checkpoint(tmp_path / "ckpt", tower, ids, {"note": "hi", "p": math.inf})
    restored = load_checkpoint(path)
    assert restored.item_ids == ids
    assert restored.config == tower.config
    assert restored.info["note"] == "hi"
    seq = torch.tensor([[1, 2, 3, 0]])
    with torch.no_grad():
        torch.testing.assert_close(restored.tower(seq)[0], tower.eval()(seq)[0])
    # Saving again over it replaces it atomically.
    save_checkpoint(path, tiny(seed=4), ids)
    assert load_checkpoint(path).config.kind == "mind"


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", tiny(), [f"x{i}" for i in range(30)])
    marker = tmp_path / "pwned"
    torch.save({"payload": Exploit(str(marker))}, path / "weights.pt")
    with pytest.raises(ModelExportError, match="plain state_dict"):
        load_checkpoint(path)
    assert not marker.exists()


class Exploit:
    """Unpickling this would create a file: weights_only loading must refuse it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_cli_train_evaluate_export(tmp_path, capsys):
    from mindstream.app.cli import main
    from model_export.bundle import load_bundle
    from model_export.checkpoint import load_checkpoint

    run = tmp_path / "run"
    bundles = tmp_path / "bundles"
    code = main(
        [
            "train",
            "--synthetic-users=150",
            "--synthetic-items=80",
            "--synthetic-clusters=8",
            "--dim=8",
            "--max-len=20",
            "--epochs=2",
            "--batch-size=128",
            "--negatives=30",
            f"--run-dir={run}",
            f"--bundles={bundles}",
            f"--results={tmp_path / 'summary.json'}",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "HR@50" in out and "bundle:" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["protocol"] == "leave_last_out"
    # No model flag: the default tower, ComiRec-SA with K = 4, no head, trained on max scoring.
    assert (summary["model"]["kind"], summary["model"]["k"]) == ("comirec_sa", 4)
    assert summary["model"]["head_hidden"] == -1
    assert load_checkpoint(run).info["train"]["interest_scoring"] == "max"
    # One target per user: the selection metric, Recall@50, is HitRate@50.
    best = summary["validation"]["best"]
    assert summary["validation"]["metric"] == "recall@50"
    assert best["recall@50"] == best["hit_rate@50"] == summary["train"]["best_score"]
    name = summary["model"]["kind"]
    assert 0.0 <= summary["test"][name]["metrics"]["hit_rate@50"] <= 1.0
    bundle = load_bundle(bundles / "current")
    assert bundle.path.name.startswith("comirec-sa-")
    assert bundle.manifest["metrics"]["data_spec"]["synthetic"]["n_items"] == 80
    assert bundle.manifest["metrics"]["test"]["hit_rate@50"] == pytest.approx(
        summary["test"][name]["metrics"]["hit_rate@50"]
    )

    # Exporting the checkpoint again gives the same content, hence the same version.
    assert main(["export", f"--checkpoint={run}", f"--out={bundles}"]) == 0
    assert f"bundle: {bundle.path}" in capsys.readouterr().out

    out_dir = tmp_path / "eval"
    assert main(["evaluate", f"--bundle={bundles / 'current'}", f"--out={out_dir}"]) == 0
    onnx_result = json.loads((out_dir / "leave_last_out" / "results.json").read_text())
    assert (out_dir / "comirec" / "hit_rate.png").stat().st_size > 0
    assert (
        main(
            [
                "evaluate",
                f"--checkpoint={run}",
                "--protocols=leave_last_out",
                f"--out={tmp_path / 'eval-torch'}",
            ]
        )
        == 0
    )
    torch_result = json.loads(
        (tmp_path / "eval-torch" / "leave_last_out" / "results.json").read_text()
    )
    # The same model through onnxruntime and through torch scores the same.
    onnx_metrics = onnx_result["models"][f"{name}-onnx"]["metrics"]
    torch_metrics = torch_result["models"][name]["metrics"]
    for key, value in torch_metrics.items():
        assert onnx_metrics[key] == pytest.approx(value, abs=1e-6), key


def test_comirec_protocol_chooses_the_epoch_on_validation_recall(tmp_path, capsys):
    """Several targets per user: early stopping and the bundle's validation score follow
    Recall@50 (ComiRec's selection metric), not HitRate@50; every epoch's metrics are kept."""
    from mindstream.app.cli import main
    from model_export.bundle import load_bundle

    code = main(
        [
            "train",
            "--protocol=comirec",
            "--synthetic-users=300",
            "--synthetic-items=80",
            "--synthetic-clusters=8",
            "--dim=8",
            "--max-len=20",
            "--epochs=3",
            "--batch-size=128",
            "--negatives=30",
            f"--run-dir={tmp_path / 'run'}",
            f"--bundles={tmp_path / 'bundles'}",
            f"--results={tmp_path / 'summary.json'}",
        ]
    )
    assert code == 0
    assert "best validation recall@50" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    validation, trained = summary["validation"], summary["train"]
    assert summary["protocol"] == "comirec" and validation["metric"] == "recall@50"
    assert validation["users"] == 30  # the 10% validation users of the 8:1:1 user split
    by_epoch = validation["by_epoch"]
    assert len(by_epoch) == trained["epochs"] == 3
    assert [h["valid"] for h in trained["history"]] == [m["recall@50"] for m in by_epoch]
    recalls = [m["recall@50"] for m in by_epoch]
    assert trained["best_score"] == max(recalls)
    assert trained["best_epoch"] == recalls.index(max(recalls)) + 1
    assert validation["best"] == by_epoch[trained["best_epoch"] - 1]
    # Several targets per user: recall is below the hit rate, so the two metrics differ.
    assert all(m["recall@50"] < m["hit_rate@50"] for m in by_epoch)
    metrics = load_bundle(tmp_path / "bundles" / "current").manifest["metrics"]
    assert metrics["valid_recall@50"] == trained["best_score"]
    assert "valid_hit_rate@50" not in metrics


def test_a_fold_of_the_user_split_is_trained_recorded_and_evaluated(tmp_path, capsys):
    """``--split-fold``: the checkpoint records its fold, and evaluating it on both protocols
    re-cuts that fold for ComiRec (leave-last-out has no user split to fold)."""
    from mindstream.app.cli import main
    from model_export.checkpoint import load_checkpoint

    args = [
        "train",
        "--protocol=comirec",
        "--split-fold=2",
        "--synthetic-users=200",
        "--synthetic-items=60",
        "--synthetic-clusters=6",
        "--dim=8",
        "--max-len=20",
        "--epochs=1",
        "--batch-size=128",
        "--negatives=20",
        "--no-export",
        f"--run-dir={tmp_path / 'run'}",
        f"--results={tmp_path / 'summary.json'}",
    ]
    assert main(args) == 0
    spec = load_checkpoint(tmp_path / "run").info["data"]
    assert (spec["protocol"], spec["split_seed"], spec["split_fold"]) == ("comirec", 0, 2)
    out = tmp_path / "eval"
    assert main(["evaluate", f"--checkpoint={tmp_path / 'run'}", f"--out={out}"]) == 0
    capsys.readouterr()
    comirec = json.loads((out / "comirec" / "results.json").read_text())
    trained = json.loads((tmp_path / "summary.json").read_text())["test"]
    name = next(k for k in trained if k != "popularity")
    # The same test users as training's own test evaluation: fold 2's, not fold 0's.
    for key, value in trained[name]["metrics"].items():
        assert comirec["models"][name]["metrics"][key] == pytest.approx(value, abs=1e-6), key


def test_bench_commands_report_throughput_and_machine(tmp_path, capsys):
    from mindstream.app.cli import main

    tower_json = tmp_path / "tower.json"
    code = main(
        [
            "bench",
            "tower",
            "--n-items=50",
            "--dim=8",
            "--seq-len=6",
            "--batches=1,4",
            "--seconds=0.05",
            f"--json={tower_json}",
        ]
    )
    assert code == 0
    report = json.loads(tower_json.read_text())
    assert [r["batch"] for r in report["results"]] == [1, 4]
    assert all(r["users_per_s"] > 0 for r in report["results"])
    assert report["provider"] == "CPUExecutionProvider"
    train_json = tmp_path / "train.json"
    code = main(
        [
            "bench",
            "train",
            "--dim=8",
            "--steps=3",
            "--batch-size=16",
            "--negatives=10",
            "--kinds=mind,youtube_dnn",
            "--synthetic-users=100",
            "--synthetic-items=60",
            f"--json={train_json}",
        ]
    )
    assert code == 0
    report = json.loads(train_json.read_text())
    assert [r["kind"] for r in report["results"]] == ["mind", "youtube_dnn"]
    assert all(r["steps"] == 3 and r["samples_per_s"] > 0 for r in report["results"])
    out = capsys.readouterr().out
    assert "users/s" in out and "samples/s" in out and "machine:" in out


def test_experiment_runner_writes_runs_and_a_summary(tmp_path, capsys):
    from model_export import experiments

    rng = np.random.default_rng(0)
    lines = [
        " ".join([str(u)] + [str(i) for i in rng.integers(1, 40, size=rng.integers(4, 12))])
        for u in range(1, 81)
    ]
    data = tmp_path / "Tiny.txt"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results"
    args = [
        "run",
        f"--data={data}",
        "--format=amazon",
        f"--out={out}",
        "--protocols=leave_last_out",
        "--models=mind,youtube_dnn",
        "--lrs=0.01",
        "--seeds=0,1",
        "--dim=8",
        "--epochs=1",
        "--negatives=10",
        "--batch-size=64",
        f"--checkpoints={tmp_path / 'ckpt'}",
    ]
    assert experiments.main(args) == 0
    runs = sorted(p.name for p in (out / "trials").iterdir())
    assert runs == [
        f"leave_last_out-{m}-lr0.01-seed{s}.json" for m in ("mind", "youtube_dnn") for s in (0, 1)
    ]
    assert experiments.main(args) == 0  # resumes: nothing left to run
    assert experiments.main(["summarize", f"--out={out}"]) == 0
    table = capsys.readouterr().out
    assert "| leave_last_out | mind **(chosen)** | 0.01 | 0,1 |" in table
    summary = json.loads((out / "summary.json").read_text())
    row = next(r for r in summary["rows"] if r["model"] == "youtube_dnn")
    assert row["hit_rate@50"]["n"] == 2
    # Per history-length bucket, from the saved checkpoints; all buckets together give the
    # overall test HitRate@50 of the run.
    ckpt = tmp_path / "ckpt" / "leave_last_out-mind-lr0.01-seed0"
    report = experiments.by_history_length({"mind": ckpt}, str(data), "amazon", "leave_last_out")
    buckets = report["buckets"].values()
    assert sum(b["users"] for b in buckets) == 80
    overall = sum(b["users"] * b["mind"]["hit_rate@50"] for b in buckets if b["users"]) / 80
    run = json.loads((out / "trials" / "leave_last_out-mind-lr0.01-seed0.json").read_text())
    assert overall == pytest.approx(run["test"]["mind"]["metrics"]["hit_rate@50"])
    stats = experiments.routing_diagnostics(ckpt, str(data), "amazon", "leave_last_out", min_len=4)
    assert stats["users"] > 0
    assert 0.0 <= stats["share_top_capsule_changed_from_init"] <= 1.0
    assert 1 / 4 <= stats["mean_largest_routing_weight"] <= 1.0


def test_evaluating_a_bundle_needs_no_torch(tmp_path):
    import subprocess
    import sys
    import textwrap

    from model_export.export import build_tiny_bundle

    bundle = build_tiny_bundle(tmp_path / "bundles", n_items=60, n_users=80, train_steps=5)
    code = textwrap.dedent(
        f"""
        import sys
        from mindstream.app.cli import main
        rc = main([
            "evaluate", "--bundle={bundle}", "--format=synthetic", "--synthetic-users=80",
            "--synthetic-items=60", "--synthetic-clusters=10", "--protocols=leave_last_out",
            "--out={tmp_path / "eval"}",
        ])
        print("rc", rc, "torch" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "rc 0 False", out.stderr[-2000:]
    assert (tmp_path / "eval" / "leave_last_out" / "results.json").is_file()
