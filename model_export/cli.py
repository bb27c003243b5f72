"""Subcommands of the ``model_export`` stage (imports only the standard library at import time).

``mindstream train`` trains a tower and exports a bundle, ``mindstream evaluate`` scores a
checkpoint or a bundle on both split protocols, ``mindstream export`` writes a bundle from a
checkpoint. ``python -m model_export`` offers the same subcommands.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from model_export import defaults

PROTOCOLS = ("leave_last_out", "comirec")
FORMATS = ("auto", "movielens", "amazon", "taobao", "synthetic")


def register(sub: Any) -> None:
    """Add this stage's subcommands to the ``mindstream`` parser."""
    train = sub.add_parser(
        "train",
        help="train a user tower (default ComiRec-SA, K = 4), evaluate it and export a bundle",
        description="Train a user tower on a data set (the synthetic generator when --data is "
        "omitted), early-stopped on validation Recall@50 (= HitRate@50 on leave-last-out); "
        "save a checkpoint, evaluate on the test part and export a bundle.",
    )
    _data_options(train)
    model = train.add_argument_group("model")
    model.add_argument(
        "--kind",
        choices=("mind", "youtube_dnn", "comirec_dr", "comirec_sa"),
        default=defaults.KIND,
        help="user tower: MIND, YouTube-DNN (one vector), ComiRec-DR or ComiRec-SA (default "
        f"{defaults.KIND}, the multi-interest tower that won on validation; RESULTS.md)",
    )
    model.add_argument("--dim", type=int, default=64, help="embedding width d (default 64)")
    model.add_argument(
        "--k",
        type=int,
        default=defaults.INTERESTS,
        help=f"most interests K (default {defaults.INTERESTS})",
    )
    model.add_argument(
        "--p", type=_exponent, default=1.0, help="label-aware attention p; 'inf' = hard"
    )
    model.add_argument("--routing-iterations", type=int, default=3)
    model.add_argument("--routing-init-std", type=float, default=1.0)
    model.add_argument(
        "--routing-cosine-scale",
        type=float,
        default=0.0,
        help="routing agreement s * cos(u, c) instead of u . c (0 = the paper's inner product)",
    )
    model.add_argument("--static-k", action="store_true", help="always use K interests")
    model.add_argument(
        "--behaviours-per-interest",
        type=int,
        default=0,
        help="also cap K' at floor(n / m) so each interest has ~m behaviours (0 = log2 rule only)",
    )
    model.add_argument(
        "--attention-hidden",
        type=int,
        default=0,
        help="comirec_sa: hidden width of the attention MLP (0 = 4d)",
    )
    model.add_argument(
        "--routing-no-detach",
        action="store_true",
        help="let gradients flow through the agreement of every routing iteration",
    )
    model.add_argument(
        "--head-hidden",
        type=int,
        default=None,
        help="hidden width of the two-layer ReLU head (0 = 4d, -1 = no head; default 0, and -1 "
        "for the ComiRec kinds, which score their interests directly as the paper does)",
    )
    model.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="behaviours per user (default: MINDSTREAM_WINDOW_MAX_LEN, the stream's window)",
    )
    fit = train.add_argument_group("training")
    fit.add_argument("--epochs", type=int, default=30)
    fit.add_argument("--batch-size", type=int, default=256)
    fit.add_argument("--lr", type=float, default=1e-3)
    fit.add_argument("--weight-decay", type=float, default=0.0)
    fit.add_argument(
        "--negatives", type=int, default=1000, help="shared negatives per batch; 0 = full softmax"
    )
    fit.add_argument("--temperature", type=float, default=1.0)
    fit.add_argument(
        "--interest-scoring",
        choices=("label_aware", "max"),
        default=defaults.INTEREST_SCORING,
        help="score label and negatives by label-aware attention (the MIND paper) or by the "
        f"best interest, as the serving merge does (default {defaults.INTEREST_SCORING})",
    )
    fit.add_argument(
        "--diversity-penalty",
        type=float,
        default=0.0,
        help="weight C of an interest-diversity penalty: ||A A^T - I||_F^2 on ComiRec-SA's "
        "attention maps (Lin et al. 2017), the same on the unit interests of MIND and "
        "ComiRec-DR; 0 = none (default)",
    )
    fit.add_argument(
        "--diversity-cosine",
        action="store_true",
        help="comirec_sa: penalise the squared cosines between the attention maps instead "
        "(only overlap between heads costs, not a head's spread); needs --diversity-penalty",
    )
    fit.add_argument("--no-logq", action="store_true", help="no logQ correction of the logits")
    fit.add_argument(
        "--positions-per-user",
        type=int,
        default=0,
        help="sample this many training positions per user each epoch (0 = all)",
    )
    fit.add_argument("--patience", type=int, default=3, help="epochs without improvement")
    fit.add_argument("--valid-users", type=int, default=0, help="validate on a sample (0 = all)")
    fit.add_argument("--log-every", type=int, default=200, help="steps between log lines")
    fit.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0 = no cap)")
    fit.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0 = torch default; 1 on a busy shared box, see BENCHMARKS.md)",
    )
    fit.add_argument("--seed", type=int, default=0)
    out = train.add_argument_group("output")
    out.add_argument("--run-dir", type=Path, default=None, help="checkpoint folder")
    out.add_argument(
        "--bundles", type=Path, default=None, help="bundle root (default: MINDSTREAM_BUNDLE's)"
    )
    out.add_argument("--no-export", action="store_true", help="do not write a bundle")
    out.add_argument("--results", type=Path, default=None, help="write a summary JSON here")
    train.set_defaults(handler=_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint or a bundle (HR/Recall/NDCG@N, HitRate@N plot)",
        description="Full-corpus exact retrieval on the test part of each protocol. A bundle "
        "runs through onnxruntime (no torch). Writes results.json, results.txt and "
        "hit_rate.png per protocol.",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a checkpoint folder (torch)")
    source.add_argument("--bundle", type=Path, help="a bundle folder or `current` link (onnx)")
    _data_options(evaluate, for_evaluation=True)
    evaluate.add_argument(
        "--protocols", default="both", choices=("both", *PROTOCOLS), help="default both"
    )
    evaluate.add_argument("--ns", default="20,50,100", help="cut-offs, comma separated")
    evaluate.add_argument("--exclude-history", action="store_true")
    evaluate.add_argument("--out", type=Path, default=Path("results/evaluate"))
    evaluate.set_defaults(handler=_evaluate)

    export = sub.add_parser("export", help="write a bundle from a training checkpoint")
    export.add_argument("--checkpoint", type=Path, required=True)
    export.add_argument(
        "--out", type=Path, default=None, help="bundle root (default: MINDSTREAM_BUNDLE's)"
    )
    export.add_argument("--no-current", action="store_true", help="leave `current` as it is")
    export.set_defaults(handler=_export)


def _data_options(parser: argparse.ArgumentParser, *, for_evaluation: bool = False) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        default=None,
        help="data file or folder"
        + (
            " (default: the data the model was trained on)"
            if for_evaluation
            else " (default: the synthetic generator)"
        ),
    )
    group.add_argument("--format", choices=FORMATS, default="auto")
    if not for_evaluation:
        group.add_argument("--protocol", choices=PROTOCOLS, default="leave_last_out")
    group.add_argument("--split-seed", type=int, default=0, help="ComiRec user-shuffle seed")
    group.add_argument(
        "--split-fold",
        type=int,
        default=0,
        help="ComiRec fold: which 1/10 block of the user shuffle is the test part (0-9; "
        "0 is the split without folds)",
    )
    group.add_argument("--no-features", action="store_true", help="ignore item side features")
    group.add_argument("--synthetic-users", type=int, default=2000)
    group.add_argument("--synthetic-items", type=int, default=1000)
    group.add_argument("--synthetic-clusters", type=int, default=20)
    group.add_argument("--synthetic-seed", type=int, default=0)


def _exponent(raw: str) -> float:
    value = float(raw)
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"p must be > 0 or 'inf', got {raw!r}")
    return value


def _check_model_flags(args: argparse.Namespace) -> None:
    """Impossible model and training flags fail here, before any data is read or any epoch
    runs; each message names the flag."""
    from model_export.exceptions import ModelExportError

    at_least = {
        "--k": (args.k, 1),
        "--dim": (args.dim, 1),
        "--routing-iterations": (args.routing_iterations, 1),
        "--behaviours-per-interest": (args.behaviours_per_interest, 0),
        "--attention-hidden": (args.attention_hidden, 0),
        "--batch-size": (args.batch_size, 1),
        "--epochs": (args.epochs, 1),
        "--negatives": (args.negatives, 0),
        "--patience": (args.patience, 0),
        "--positions-per-user": (args.positions_per_user, 0),
        "--valid-users": (args.valid_users, 0),
        "--max-steps": (args.max_steps, 0),
        "--threads": (args.threads, 0),
    }
    if args.head_hidden is not None:
        at_least["--head-hidden"] = (args.head_hidden, -1)
    if args.max_len is not None:
        at_least["--max-len"] = (args.max_len, 1)
    for flag, (value, low) in at_least.items():
        if value < low:
            raise ModelExportError(f"{flag} must be >= {low}; got {value}")
    positive = {"--lr": args.lr, "--temperature": args.temperature}
    for flag, number in positive.items():
        if not number > 0 or math.isinf(number):
            raise ModelExportError(f"{flag} must be a finite number > 0; got {number}")
    for flag, number in (
        ("--weight-decay", args.weight_decay),
        ("--routing-cosine-scale", args.routing_cosine_scale),
        ("--routing-init-std", args.routing_init_std),
        ("--diversity-penalty", args.diversity_penalty),
    ):
        if not number >= 0 or math.isinf(number):
            raise ModelExportError(f"{flag} must be a finite number >= 0; got {number}")
    if args.p != 1.0 and args.interest_scoring != "label_aware":
        raise ModelExportError(
            f"--p {args.p:g} is the exponent of label-aware attention; it needs "
            f"--interest-scoring label_aware (the default scoring is {defaults.INTEREST_SCORING})"
        )
    if args.diversity_penalty > 0 and (args.kind == "youtube_dnn" or args.k < 2):
        raise ModelExportError(
            f"--diversity-penalty pushes several interests apart; --kind {args.kind} with "
            f"--k {args.k} has one interest"
        )
    if args.diversity_cosine and not (args.diversity_penalty > 0 and args.kind == "comirec_sa"):
        raise ModelExportError(
            "--diversity-cosine needs --kind comirec_sa (attention maps) and --diversity-penalty "
            f"> 0; got --kind {args.kind}, --diversity-penalty {args.diversity_penalty:g}"
        )
    if args.kind == "comirec_dr" and args.routing_init_std != 1.0:
        raise ModelExportError(
            "--routing-init-std applies to --kind mind; comirec_dr starts from zero logits"
        )
    if args.kind in ("youtube_dnn", "comirec_sa") and (
        args.routing_cosine_scale or args.routing_no_detach or args.routing_iterations != 3
    ):
        raise ModelExportError(f"--kind {args.kind} has no routing; drop the --routing-* flags")


def _spec(args: argparse.Namespace, protocol: str) -> Any:
    from model_export.workflow import DataSpec

    return DataSpec(
        path=None if args.data is None else str(Path(args.data).resolve()),
        format=args.format,
        protocol=protocol,
        split_seed=args.split_seed,
        split_fold=args.split_fold,
        features=not args.no_features,
        synthetic={
            "n_users": args.synthetic_users,
            "n_items": args.synthetic_items,
            "n_clusters": args.synthetic_clusters,
            "seed": args.synthetic_seed,
        },
    )


def _bundle_root(explicit: Path | None, settings: Any) -> Path:
    if explicit is not None:
        return explicit
    configured = Path(settings.bundle_path)
    return configured.parent if configured.name == "current" else configured


def _train(args: argparse.Namespace, settings: Any) -> int:
    from model_export.train import TrainConfig
    from model_export.workflow import model_name, train_job, write_json

    spec = _spec(args, args.protocol)
    head_hidden = args.head_hidden
    if head_hidden is None:
        head_hidden = defaults.head_hidden(args.kind)
    overrides = {
        "kind": args.kind,
        "dim": args.dim,
        "k": args.k,
        "pow_p": args.p,
        "routing_iterations": args.routing_iterations,
        "routing_init_std": args.routing_init_std,
        "routing_cosine_scale": args.routing_cosine_scale,
        "routing_detach": not args.routing_no_detach,
        "dynamic_k": not args.static_k,
        "behaviours_per_interest": args.behaviours_per_interest,
        "attention_hidden": args.attention_hidden,
        "head_hidden": head_hidden,
        "max_len": args.max_len or settings.window_max_len,
        "seed": args.seed,
    }
    _check_model_flags(args)
    train_config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        negatives=args.negatives,
        temperature=args.temperature,
        interest_scoring=args.interest_scoring,
        diversity_penalty=args.diversity_penalty,
        diversity_cosine=args.diversity_cosine,
        logq=not args.no_logq,
        positions_per_user=args.positions_per_user,
        patience=args.patience,
        log_every=args.log_every,
        max_steps=args.max_steps,
        threads=args.threads,
        seed=args.seed,
    )
    run_dir = args.run_dir
    if run_dir is None:
        label = "synthetic" if spec.is_synthetic else Path(str(spec.path)).stem
        kind = model_name(argparse.Namespace(kind=args.kind, k=args.k))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{label}-{args.protocol}-{kind}-seed{args.seed}-{stamp}"
    outcome = train_job(
        spec,
        overrides,
        train_config,
        run_dir=run_dir,
        bundle_root=None if args.no_export else _bundle_root(args.bundles, settings),
        valid_users=args.valid_users,
    )
    print(outcome.test.to_text())
    result = outcome.result
    print(
        f"trained {result.epochs} epochs ({result.steps} steps, "
        f"{result.samples_per_second:.0f} samples/s, {result.seconds:.1f} s); best validation "
        f"{outcome.validation['metric']} {result.best_score:.4f} at epoch {result.best_epoch}"
    )
    print(f"checkpoint: {outcome.checkpoint}")
    if outcome.bundle is not None:
        print(f"bundle: {outcome.bundle}")
    if args.results is not None:
        write_json(args.results, outcome.summary())
        print(f"results: {args.results}")
    return 0


def _evaluate(args: argparse.Namespace, settings: Any) -> int:
    from model_export.workflow import evaluate_job

    protocols = list(PROTOCOLS) if args.protocols == "both" else [args.protocols]
    # The spec carries the fold, which only a ComiRec split has; evaluate_job drops it for
    # leave-last-out.
    first = "comirec" if "comirec" in protocols else protocols[0]
    spec = None if args.data is None and args.format == "auto" else _spec(args, first)
    ns = tuple(int(n) for n in args.ns.split(",") if n.strip())
    reports = evaluate_job(
        checkpoint=args.checkpoint,
        bundle=args.bundle,
        spec=spec,
        protocols=protocols,
        out_dir=args.out,
        ns=ns,
        exclude_history=args.exclude_history,
    )
    for protocol, report in reports.items():
        print(report.to_text())
        print(f"written: {args.out / protocol}/results.json, results.txt, hit_rate.png\n")
    return 0


def _export(args: argparse.Namespace, settings: Any) -> int:
    from model_export.checkpoint import load_checkpoint
    from model_export.export import export_bundle
    from model_export.workflow import bundle_metrics

    restored = load_checkpoint(args.checkpoint)
    path = export_bundle(
        restored.tower,
        restored.item_ids,
        _bundle_root(args.out, settings),
        metrics=bundle_metrics(restored.info),
        make_current=not args.no_current,
        item_categories=restored.item_categories,
    )
    print(f"bundle: {path}")
    return 0
