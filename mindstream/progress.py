"""Progress bars for long jobs: a live bar on a terminal, a plain line every few seconds elsewhere.

tqdm redraws its bar with a carriage return many times a second. On a terminal that is one
line that changes; written to a file or a CI log it becomes thousands of updates on one line.
:func:`progress_bar` is the one way this project makes a progress bar: on a terminal it is
tqdm's bar, anywhere else the same status is written as its own line at most every
``PLAIN_INTERVAL_S`` seconds (and once at the end).
"""

from __future__ import annotations

import io
import sys
from typing import Any, TextIO

from tqdm import tqdm

PLAIN_INTERVAL_S = 5.0


class _Lines(io.TextIOBase):
    """A text stream for tqdm that writes each refresh as one line, without carriage returns."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self._out = out
        self._last = ""

    def write(self, text: str) -> int:
        status = text.replace("\r", "").strip()
        # tqdm clears a bar it does not leave by writing blanks: nothing to say then.
        if status and status != self._last:
            self._out.write(status + "\n")
            self._last = status
        return len(text)

    def flush(self) -> None:
        self._out.flush()


def is_terminal(out: Any) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(
    total: int | None,
    desc: str,
    unit: str,
    *,
    enabled: bool = True,
    out: TextIO | None = None,
    **options: Any,
) -> tqdm:
    """A tqdm bar on ``out`` (default: standard error), or plain lines when it is no terminal."""
    stream = out if out is not None else sys.stderr
    if not enabled:
        return tqdm(total=total, desc=desc, unit=unit, disable=True)
    if is_terminal(stream):
        return tqdm(total=total, desc=desc, unit=unit, file=stream, **options)
    options.pop("leave", None)  # a plain log keeps its last line
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=_Lines(stream),
        mininterval=PLAIN_INTERVAL_S,
        ascii=True,
        ncols=100,
        dynamic_ncols=False,
        **options,
    )
