"""``python -m model_export``: the model stage's subcommands (train, evaluate, export)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mindstream.command import run
from model_export.cli import register


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return run(parser, argv, "model_export")


if __name__ == "__main__":
    raise SystemExit(main())
