"""Subcommands that span stages: ``demo`` and ``bench``.

``bench TARGET`` dispatches to ``<package>.bench:main``; the demo arrives with its issue.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from mindstream.errors import MindstreamError
from mindstream.settings import Settings

BENCH_TARGETS = {
    "tower": "model_export.bench",
    "train": "model_export.bench",
    "stream": "stream.bench",
    "recall": "recall.bench",
}


def register(sub: Any) -> None:
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
