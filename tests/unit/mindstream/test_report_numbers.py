"""The report's tables show numbers as people read them."""

from __future__ import annotations

import pytest

from mindstream.app.report import _table, human_number


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (4940.0, "4,940"),
        (4940.4567, "4,940"),
        (123456.7, "123,457"),
        (100.0, "100"),
        (42.54, "42.5"),
        (3.4217, "3.42"),
        (3.0, "3"),
        (0.25341, "0.253"),
        (0.0034, "0.003"),
        (0.0, "0"),
        (0.000012, "1.20e-05"),
        (-1500.0, "-1,500"),
        (float("nan"), "-"),
    ],
)
def test_human_number(value: float, shown: str) -> None:
    assert human_number(value) == shown


def test_table_cells_are_formatted_for_people() -> None:
    html = _table(
        ["name", "events", "events/s", "p50 ms", "HR@50"], [["x", 40000, 4940.0, 0.6125, None]]
    )
    assert "<td>40,000</td><td>4,940</td><td>0.613</td><td>-</td>" in html
    assert "4940.000" not in html
