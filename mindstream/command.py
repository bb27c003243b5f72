"""The run loop every command line of the project shares: parse, read the settings, configure
logging, run the chosen handler, and turn the project's errors into one line and an exit code.

``mindstream`` (:mod:`mindstream.app.cli`) registers every stage's subcommands; ``python -m
stream``, ``python -m recall``, ``python -m infra`` and ``python -m model_export`` register
only their own stage's (:func:`run_stage`), so a stage's entry point never imports the
application layer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mindstream.errors import MindstreamError
from mindstream.settings import Settings


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None, prog: str) -> int:
    """Parse, configure logging from the settings and run the chosen subcommand's handler;
    errors of this project print one line (exit 2), Ctrl-C exits 130."""
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        return int(args.handler(args, settings) or 0)
    except MindstreamError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def run_stage(register: Callable[[Any], None], argv: Sequence[str]) -> int:
    """``mindstream ARGV`` with only the subcommands ``register`` adds (a stage's own
    ``cli.register``): the same parser, messages and exit codes for that stage's commands."""
    parser = argparse.ArgumentParser(prog="mindstream")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return run(parser, argv, "mindstream")
