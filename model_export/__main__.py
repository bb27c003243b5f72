"""``python -m model_export``: the model stage's subcommands (train, evaluate, export)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mindstream.cli import configure_logging
from mindstream.errors import MindstreamError
from mindstream.settings import Settings
from model_export.cli import register


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        return int(args.handler(args, settings) or 0)
    except MindstreamError as exc:
        print(f"model_export {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
