"""Subcommands of the ``recall`` stage (imports only the standard library at import time)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add this stage's subcommands to the ``mindstream`` parser."""
