"""Subcommands that span stages: ``demo``, ``publish``, ``report`` and ``bench``.

``demo`` runs the whole system locally (:mod:`mindstream.app.demo`); ``publish`` replays a click log
or the synthetic generator onto the clicks topic (:mod:`stream.publish`); ``report`` writes the
HTML report (:mod:`mindstream.app.report`); ``bench TARGET`` dispatches to the ``main`` of a module
of the :mod:`benchmarks` package. Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from mindstream.errors import MindstreamError
from mindstream.settings import Settings

BENCH_TARGETS = {
    "tower": "benchmarks.model_bench",
    "train": "benchmarks.model_bench",
    "stream": "benchmarks.stream_bench",
    "recall": "benchmarks.recall_bench",
    "recall-ab": "benchmarks.recall_ab",
}


def register(sub: Any) -> None:
    _register_demo(sub)
    _register_publish(sub)
    _register_report(sub)
    bench = sub.add_parser("bench", help="run a benchmark and print its numbers")
    bench.add_argument("target", choices=sorted(BENCH_TARGETS))
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options for that benchmark")
    bench.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    module_name = BENCH_TARGETS[args.target]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise MindstreamError(f"benchmark {args.target!r} is not available: {exc}") from exc
    return int(module.main([args.target, *args.rest], settings) or 0)


def _register_publish(sub: Any) -> None:
    publish = sub.add_parser(
        "publish",
        help="replay a click log or the synthetic generator to the clicks topic",
        description="Send click events keyed by user id to $MINDSTREAM_CLICKS_TOPIC (created with "
        "$MINDSTREAM_TOPIC_PARTITIONS partitions when missing), in event-time order, at --rate "
        "events/s. Malformed lines and events the worker would reject are counted and skipped. "
        "Exit status 1 when any event was not acknowledged by the broker.",
    )
    source = publish.add_mutually_exclusive_group(required=True)
    source.add_argument("path", nargs="?", type=Path, help="a log file or folder")
    source.add_argument(
        "--synthetic", action="store_true", help="the synthetic planted-interest generator"
    )
    publish.add_argument(
        "--format",
        choices=("auto", "movielens", "amazon", "taobao"),
        default="auto",
        help="format of PATH (default: detected)",
    )
    synthetic = publish.add_argument_group("synthetic generator")
    synthetic.add_argument("--users", type=_positive, default=2000, help="users (default 2000)")
    synthetic.add_argument("--items", type=_positive, default=1000, help="items (default 1000)")
    synthetic.add_argument("--clusters", type=_positive, default=20, help="clusters (default 20)")
    synthetic.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    publish.add_argument(
        "--rate", type=float, default=0.0, help="events per second; 0 = as fast as possible"
    )
    publish.add_argument("--limit", type=_positive, default=None, help="send the first N events")
    publish.add_argument("--topic", default=None, help="topic to send to [MINDSTREAM_CLICKS_TOPIC]")
    publish.add_argument(
        "--restamp",
        action="store_true",
        help="stamp each event with the send time instead of its logged time",
    )
    publish.add_argument(
        "--flush-timeout", type=float, default=60.0, help="seconds to wait for the last acks"
    )
    publish.add_argument("--no-progress", action="store_true", help="no progress bar")
    publish.set_defaults(handler=_publish)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from stream import publish

    # kafka-python logs every connection at INFO: keep the progress bar readable.
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.setLevel(max(kafka_logger.getEffectiveLevel(), logging.WARNING))
    if args.rate < 0:
        raise MindstreamError(f"--rate {args.rate}: expected events per second >= 0")
    if args.synthetic:
        from model_export.data.synthetic import SyntheticConfig

        source = publish.synthetic_source(
            SyntheticConfig(
                n_users=args.users, n_items=args.items, n_clusters=args.clusters, seed=args.seed
            )
        )
    else:
        source = publish.file_source(args.path, args.format)
    for note in source.notes:
        print(f"note: {note}", file=sys.stderr)
    source = publish.limited(source, args.limit)
    print(f"publishing {source.name} ({source.total} events)", file=sys.stderr)
    stats = publish.publish(
        settings,
        source,
        rate=args.rate,
        topic=args.topic,
        restamp=args.restamp,
        progress=not args.no_progress,
        flush_timeout_s=args.flush_timeout,
    )
    for example in stats.examples:
        print(f"  {example}", file=sys.stderr)
    print(stats.summary())
    return 0 if stats.failed == 0 else 1


def _register_report(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="write one self-contained HTML page (and PNGs) from the latest results",
        description="Read evaluation results (results.json of `mindstream evaluate`) and "
        "measurements (`mindstream demo`, benchmarks) under --results, and write report.html "
        "with its figures embedded, plus the PNGs, into --out. Sections without input say "
        "which command produces it. With --bundle and --data (or --synthetic) the interests "
        "section is computed from that bundle and log.",
    )
    report.add_argument(
        "--results", type=Path, default=Path("results"), help="results folder (default results)"
    )
    report.add_argument(
        "--out", type=Path, default=None, help="output folder (default <results>/report)"
    )
    report.add_argument("--bundle", type=Path, default=None, help="bundle for the interests")
    data = report.add_mutually_exclusive_group()
    data.add_argument("--data", type=Path, default=None, help="log whose users to show")
    data.add_argument(
        "--synthetic", action="store_true", help="the synthetic log (planted interests known)"
    )
    report.add_argument(
        "--format", choices=("auto", "movielens", "amazon", "taobao"), default="auto"
    )
    synthetic = report.add_argument_group("synthetic generator (as the bundle was trained)")
    synthetic.add_argument("--users", type=_positive, default=2000)
    synthetic.add_argument("--items", type=_positive, default=1000)
    synthetic.add_argument("--clusters", type=_positive, default=20)
    synthetic.add_argument("--max-interests", type=_positive, default=4)
    synthetic.add_argument("--seed", type=int, default=0)
    report.add_argument(
        "--sample", type=_positive, default=200, help="users analysed for the interests section"
    )
    report.add_argument(
        "--from-redis",
        action="store_true",
        help="read the users' interest vectors from Redis [REDIS_URL, MINDSTREAM_REDIS_PREFIX] "
        "instead of running the bundle's tower over the log",
    )
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from mindstream.app.report import build_report

    interests = match = None
    origin = ""
    if args.bundle is not None:
        if args.data is None and not args.synthetic:
            raise MindstreamError(
                "--bundle needs the log its users come from: --data or --synthetic"
            )
        interests, match, origin = _interests(args, settings)
    elif args.data is not None or args.synthetic:
        raise MindstreamError(
            "--data/--synthetic need --bundle (the model whose interests to show)"
        )
    out = args.out if args.out is not None else args.results / "report"
    outcome = build_report(
        args.results,
        out,
        interests=interests,
        interest_match=match,
        interests_origin=origin,
        progress=lambda line: print(f"  {line}", file=sys.stderr),
    )
    print(f"report: {outcome.page} ({len(outcome.figures)} figures, PNGs beside it)")
    return 0


def _interests(args: argparse.Namespace, settings: Settings) -> tuple[Any, Any, str]:
    from mindstream.app.report import interests_from_bundle

    vocab = None
    planted = None
    if args.synthetic:
        from model_export.data.synthetic import SyntheticConfig, category_name, generate

        data, truth = generate(
            SyntheticConfig(
                n_users=args.users,
                n_items=args.items,
                n_clusters=args.clusters,
                max_interests=args.max_interests,
                seed=args.seed,
            )
        )
        vocab = {"category": [category_name(c) for c in range(truth.n_clusters)]}
        planted = [[category_name(c) for c in cs] for cs in truth.user_clusters]
    else:
        from model_export.data import load

        result = load(args.data, args.format, skip_bad=True)
        data, vocab = result.interactions, result.feature_vocab
    records = None
    if args.from_redis:
        from mindstream.redis_config import redis_client
        from stream.record import read_many

        client = redis_client(settings)

        def records(user_ids: list[str]) -> list[Any]:
            return list(read_many(client, settings.redis_prefix, user_ids))

    views, match = interests_from_bundle(
        args.bundle, data, vocab=vocab, planted=planted, sample=args.sample, records=records
    )
    origin = f"bundle {args.bundle}, " + ("Redis records" if args.from_redis else "its tower")
    return views, match, origin


def _register_demo(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="run everything locally on a synthetic log and show the interests it finds",
        description="Start the local broker and Redis, generate a click log with planted "
        "interests (or read --data), train the default tower (ComiRec-SA, K = 4), export the "
        "bundle, start the stream worker and the recall service, replay the clicks, and show "
        "planted next to recovered interests, recalled candidates, freshness and latency. Stops "
        "everything it started on exit, Ctrl-C or SIGTERM. Writes results for `mindstream "
        "report`.",
    )
    from mindstream.app.demo import register_options

    register_options(demo)
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from mindstream.app.demo import main

    return main(args, settings)
