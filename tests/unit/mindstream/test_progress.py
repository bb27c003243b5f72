"""Progress bars: tqdm's live bar on a terminal, a plain line every few seconds anywhere else."""

from __future__ import annotations

import io

import pytest

from mindstream import progress
from mindstream.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_few_plain_lines_not_thousands_of_updates() -> None:
    log = io.StringIO()
    with progress_bar(40_000, "publish", "ev", out=log) as bar:
        for _ in range(40_000):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # the first status and the final one: 40,000 updates in well under the interval
    assert 1 <= len(lines) <= 3, lines
    assert lines[-1].startswith("publish: 100%") and "40000/40000" in lines[-1]


def test_a_log_gets_a_line_per_interval() -> None:
    now = [1000.0]
    log = io.StringIO()
    bar = progress_bar(100, "in Redis", "ev", out=log)
    assert bar.mininterval == progress.PLAIN_INTERVAL_S == 5.0
    # tqdm's clock, advanced by hand: 100 updates half a second apart, 50 s in all
    bar._time = lambda: now[0]
    bar.start_t = bar.last_print_t = now[0]
    for _ in range(100):
        now[0] += 0.5
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert 9 <= len(lines) <= 12, lines  # the first, one per 5 s, the last
    assert all(line.startswith("in Redis:") for line in lines)
    assert "100/100 [00:50<00:00" in lines[-1]


def test_a_terminal_gets_the_live_bar() -> None:
    terminal = Terminal()
    with progress_bar(1000, "index flat", "item", out=terminal, mininterval=0) as bar:
        for _ in range(10):
            bar.update(100)
    assert terminal.getvalue().count("\r") >= 10


def test_a_disabled_bar_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(10, "publish", "ev", enabled=False) as bar:
        bar.update(10)
    assert capsys.readouterr() == ("", "")
