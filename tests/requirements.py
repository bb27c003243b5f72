"""What a test does when something it needs is missing: skip in a developer's ad-hoc run, fail
where the run must be complete (``CI=true`` or an explicit ``MINDSTREAM_TEST_SERVICES``).

The one owner of that rule: the service fixtures of ``tests/conftest.py`` and every test that
needs a tool (redis-server, redis-cli, openssl, chromium...) use it, so a CI machine missing a
tool fails instead of turning tests into skips.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NoReturn

import pytest

from infra.testing import CHOICE_VARIABLE


def required(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a missing requirement fails the run: ``CI=true`` or an explicit choice."""
    in_ci = environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
    return in_ci or bool(environ.get(CHOICE_VARIABLE, "").strip())


def missing(reason: str) -> NoReturn:
    """Skip the calling test, or fail it when :func:`required` says the run must be complete."""
    if required():
        pytest.fail(f"{reason} (required here: CI=true or {CHOICE_VARIABLE} is set)")
    pytest.skip(reason)
