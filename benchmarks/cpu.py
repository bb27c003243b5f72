"""CPU time of other processes (a broker, Redis) from ``/proc/<pid>/stat``, and per-event figures.

A benchmark reads each service's user + system CPU seconds before and after a phase; the
difference over the phase's events is that service's CPU cost per event. The parsing and the
arithmetic are pure; :class:`ServiceCpu` does the reading.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

_PROC = Path("/proc")


def cpu_ticks_from_stat(text: str) -> int:
    """utime + stime (fields 14 and 15, in clock ticks) from the text of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may itself hold spaces and parentheses,
    so the fields are counted from the last ``)``.
    """
    close = text.rfind(")")
    if close < 0:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    fields = text[close + 1 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15
    if len(fields) < 13:
        raise ValueError(f"/proc/<pid>/stat line too short: {text[:80]!r}")
    return int(fields[11]) + int(fields[12])


def process_cpu_seconds(pid: int) -> float | None:
    """The CPU seconds (user + system) a live process has used, None when it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return cpu_ticks_from_stat(text) / os.sysconf("SC_CLK_TCK")


def ms_per_event(before: float | None, after: float | None, events: float) -> float | None:
    """CPU milliseconds per event between two readings (None when a reading or events is
    missing, or the counter went backwards: another process took the PID)."""
    if before is None or after is None or events <= 0 or after < before:
        return None
    return round(1000 * (after - before) / events, 4)


def share_of_core(before: float | None, after: float | None, seconds: float) -> float | None:
    """The share of one core (1.0 = a whole core) used between two readings ``seconds`` apart."""
    if before is None or after is None or seconds <= 0 or after < before:
        return None
    return round((after - before) / seconds, 3)


class ServiceCpu:
    """The summed CPU seconds of named groups of processes, e.g. ``{"broker": [pid],
    "redis": [pid, ...]}``; a group with a process gone reads None."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items() if pids}

    def read(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, pids in self.groups.items():
            readings = [process_cpu_seconds(pid) for pid in pids]
            out[name] = (
                None if any(r is None for r in readings) else sum(r or 0.0 for r in readings)
            )
        return out

    def with_group(self, name: str, pids: Sequence[int]) -> ServiceCpu:
        return ServiceCpu({**self.groups, name: pids})


def per_event(
    before: Mapping[str, float | None], after: Mapping[str, float | None], events: float
) -> dict[str, float | None]:
    """``{"<group>_cpu_ms_per_event": ...}`` for every group read at both ends."""
    return {
        f"{name}_cpu_ms_per_event": ms_per_event(before.get(name), after.get(name), events)
        for name in after
    }
