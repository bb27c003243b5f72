"""Subcommands of the ``recall`` stage (imports only the standard library at import time).

``mindstream recall`` serves candidates over HTTP; ``mindstream recall index`` builds (or
checks) a bundle's item index ahead of time; ``mindstream recall openapi`` prints the API
document; ``mindstream recall precompute`` keeps candidates in Redis fresh for a ranking stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Any

from mindstream.settings import Settings

logger = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "flat", "ivfpq", "ivf", "hnsw")


def register(sub: Any) -> None:
    """Add this stage's subcommands to the ``mindstream`` parser."""
    recall = sub.add_parser(
        "recall",
        help="serve candidates from users' interest vectors and a Faiss item index",
        description="Without an action: run the HTTP recall service. Options override the "
        "settings named in brackets.",
    )
    _serve_options(recall)
    recall.set_defaults(handler=_serve)
    actions = recall.add_subparsers(dest="recall_command", metavar="ACTION")

    serve = actions.add_parser("serve", help="run the HTTP recall service (the default)")
    _serve_options(serve)
    # Set by the supervisor of MINDSTREAM_RECALL_WORKERS for the workers it starts: the channel
    # over which it hands them the connections it accepts (recall.handoff).
    serve.add_argument("--handoff-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)

    index = actions.add_parser(
        "index", help="build the bundle's item index now (or load the cached one) and describe it"
    )
    _bundle_options(index)
    index.add_argument(
        "--check", action="store_true", help="also report recall@50 of the index vs exact search"
    )
    index.set_defaults(handler=_index)

    openapi = actions.add_parser("openapi", help="print the service's OpenAPI document")
    openapi.set_defaults(handler=_openapi)

    precompute = actions.add_parser(
        "precompute",
        help="keep every updated user's candidates in Redis (<prefix>c:{user})",
        description="Listen to Redis keyspace notifications for interest records and write "
        "each updated user's candidates back to Redis. Turns on notify-keyspace-events K and h.",
    )
    _bundle_options(precompute)
    precompute.add_argument(
        "--full", action="store_true", help="first refresh every user that has a record"
    )
    precompute.add_argument(
        "--n",
        type=_positive_int,
        default=None,
        help="candidates per user [MINDSTREAM_RECALL_DEFAULT_N]",
    )
    precompute.add_argument(
        "--include-seen", action="store_true", help="keep items of the user's window"
    )
    precompute.set_defaults(handler=_precompute)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _bundle_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: an option left out stays out of the namespace, so `recall --port 9 serve` keeps
    # the port given before the action instead of the action parser's default.
    parser.add_argument(
        "--bundle",
        default=argparse.SUPPRESS,
        help="bundle folder or `current` link [MINDSTREAM_BUNDLE]",
    )
    parser.add_argument(
        "--index",
        choices=INDEX_KINDS,
        default=argparse.SUPPRESS,
        help="item index kind [MINDSTREAM_RECALL_INDEX]",
    )


def _serve_options(parser: argparse.ArgumentParser) -> None:
    _bundle_options(parser)
    parser.add_argument(
        "--host", default=argparse.SUPPRESS, help="bind address [MINDSTREAM_RECALL_HOST]"
    )
    parser.add_argument(
        "--port", type=int, default=argparse.SUPPRESS, help="port [MINDSTREAM_RECALL_PORT]"
    )


def _apply(args: argparse.Namespace, settings: Settings) -> Settings:
    overrides = {
        "bundle_path": getattr(args, "bundle", None),
        "recall_index": getattr(args, "index", None),
        "recall_host": getattr(args, "host", None),
        "recall_port": getattr(args, "port", None),
    }
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from recall.server import serve

    serve(_apply(args, settings), handoff_fd=getattr(args, "handoff_fd", None))
    return 0


def _index(args: argparse.Namespace, settings: Settings) -> int:
    from model_export.bundle import load_bundle
    from recall.index import open_index

    settings = _apply(args, settings)
    bundle = load_bundle(settings.bundle_path)
    item_index = open_index(bundle, settings, progress=sys.stderr.isatty())
    description = item_index.describe()
    if args.check:
        from recall.quality import recall_at_k_vs_exact

        description["recall_at_50_vs_exact"] = recall_at_k_vs_exact(bundle, item_index, k=50)
    print(json.dumps(description, indent=2))
    return 0


def _openapi(args: argparse.Namespace, settings: Settings) -> int:
    from recall.service import OPENAPI_PATH

    sys.stdout.write(OPENAPI_PATH.read_text(encoding="utf-8"))
    return 0


def _precompute(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from recall.precompute import precompute_forever
    from recall.registry import IndexRegistry
    from recall.server import new_event_loop

    settings = _apply(args, settings)
    registry = IndexRegistry(settings, progress=sys.stderr.isatty(), freeze_gc=True)
    registry.load(settings.bundle_path)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(
            precompute_forever(
                settings,
                registry,
                full=args.full,
                n=args.n,
                exclude_seen=not args.include_seen,
            )
        )
    return 0
