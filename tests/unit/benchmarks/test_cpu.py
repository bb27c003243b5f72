"""Service CPU from /proc/<pid>/stat and the per-event and per-core arithmetic."""

from __future__ import annotations

import os
import time

import pytest

from benchmarks.cpu import (
    ServiceCpu,
    cpu_ticks_from_stat,
    ms_per_event,
    per_event,
    process_cpu_seconds,
    share_of_core,
)

# a JVM's line: the command name holds a space and a parenthesis
STAT = (
    "4242 (java (x) y) S 1 4242 4242 0 -1 4194560 90000 0 12 0 "
    "1234 567 0 0 20 0 60 0 8888 4000000000 70000 18446744073709551615"
)


def test_cpu_ticks_are_utime_plus_stime_counted_from_the_last_parenthesis() -> None:
    assert cpu_ticks_from_stat(STAT) == 1234 + 567


@pytest.mark.parametrize("text", ["", "4242 java S 1 2 3", "1 (x) S 1 2 3"])
def test_a_line_that_is_not_a_stat_line_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="stat"):
        cpu_ticks_from_stat(text)


def test_own_process_cpu_grows_with_work_and_a_gone_pid_reads_none() -> None:
    before = process_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    after = process_cpu_seconds(os.getpid())
    assert before is not None and after is not None and after > before
    assert process_cpu_seconds(2**22 + 1) is None  # above the kernel's pid_max limit


def test_per_event_and_per_core_figures() -> None:
    assert ms_per_event(10.0, 11.5, 3000) == 0.5
    assert share_of_core(10.0, 11.5, 3.0) == 0.5
    # missing readings, no events, or a counter that went backwards (the pid was reused)
    assert ms_per_event(None, 1.0, 10) is None
    assert ms_per_event(1.0, 2.0, 0) is None
    assert ms_per_event(2.0, 1.0, 10) is None
    assert share_of_core(1.0, 2.0, 0.0) is None
    assert per_event({"broker": 1.0, "redis": None}, {"broker": 2.0, "redis": 3.0}, 1000) == {
        "broker_cpu_ms_per_event": 1.0,
        "redis_cpu_ms_per_event": None,
    }


def test_service_cpu_sums_a_group_and_reads_none_when_one_member_is_gone() -> None:
    me = os.getpid()
    cpu = ServiceCpu({"both": [me, me], "one": [me], "empty": []})
    assert set(cpu.groups) == {"both", "one"}
    read = cpu.read()
    assert read["both"] is not None and read["one"] is not None
    assert read["both"] >= 2 * read["one"] - 0.05
    assert cpu.with_group("gone", [2**22 + 1]).read()["gone"] is None
