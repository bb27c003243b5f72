"""The ``mindstream`` command line: one console script that reaches every job.

Each stage package owns its subcommands in ``<package>/cli.py`` through a
``register(subparsers)`` function. Those modules import only the standard library at import
time, so ``mindstream --help`` stays fast and no job pays for another's heavy imports.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from mindstream import __version__
from mindstream.command import run
from mindstream.settings import Settings, describe, markdown_table

STAGE_CLIS = ("infra.cli", "model_export.cli", "stream.cli", "recall.cli", "mindstream.app.jobs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mindstream",
        description="Near-real-time multi-interest user vectors from a Kafka click stream.",
    )
    parser.add_argument("--version", action="version", version=f"mindstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    settings = sub.add_parser("settings", help="show every setting, its variable and value")
    settings.add_argument(
        "--markdown", action="store_true", help="print the README table of settings"
    )
    settings.set_defaults(handler=_show_settings)

    for module_name in STAGE_CLIS:
        importlib.import_module(module_name).register(sub)
    return parser


def _show_settings(args: argparse.Namespace, settings: Settings) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    current = settings.as_env()
    for env, default, doc in describe():
        marker = "" if current[env] == default else "   (set)"
        print(f"{env}={current[env]}{marker}\n    {doc}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, "mindstream")


if __name__ == "__main__":
    raise SystemExit(main())
