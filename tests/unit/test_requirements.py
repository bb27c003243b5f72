"""The rule for a missing requirement: skip ad hoc, fail in CI or with an explicit choice."""

from __future__ import annotations

import pytest

from tests.requirements import missing, required


def test_required_in_ci_or_with_an_explicit_choice() -> None:
    assert not required({})
    assert not required({"CI": "false"})
    assert required({"CI": "true"})
    assert required({"MINDSTREAM_TEST_SERVICES": "tansu"})


def test_missing_skips_ad_hoc_and_fails_where_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("MINDSTREAM_TEST_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception):
        missing("no tool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no tool"):
        missing("no tool")
