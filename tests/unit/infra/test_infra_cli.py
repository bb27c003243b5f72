"""The ``services`` subcommands' wiring, and the stage CLI's import-time promise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mindstream.app.cli import build_parser


def test_stage_cli_imports_only_the_standard_library() -> None:
    code = (
        "import sys, infra.cli; "
        "heavy = ('kafka', 'aiokafka', 'redis', 'testcontainers', 'docker', 'numpy'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("action", ["up", "down", "status", "create-topics"])
def test_services_actions_are_registered(action: str) -> None:
    args = build_parser().parse_args(["services", action])
    assert callable(args.handler)
    assert args.services_command == action


def test_services_needs_an_action() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["services"])
