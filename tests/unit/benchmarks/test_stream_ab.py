"""The A/B benchmark's run order and its --trees option."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.stream_ab import alternate, parse_trees


def test_trees_are_named_absolute_paths() -> None:
    trees = parse_trees("old=/tmp/old, new=.")
    assert trees == [("old", Path("/tmp/old")), ("new", Path(".").resolve())]


@pytest.mark.parametrize(
    "value", ["old=/a", "old=/a,old=/b", "old/a,new=/b", "=/a,new=/b", "old=,new=/b"]
)
def test_bad_trees_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="--trees"):
        parse_trees(value)


def test_runs_alternate_a_b_then_b_a() -> None:
    trees = [("old", Path("/o")), ("new", Path("/n"))]
    assert [(r, name) for r, name, _ in alternate(trees, 3)] == [
        (0, "old"),
        (0, "new"),
        (1, "new"),
        (1, "old"),
        (2, "old"),
        (2, "new"),
    ]
    assert alternate(trees, 0) == []
