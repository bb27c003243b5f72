"""Spawning, recognising and stopping service processes by PID."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from infra import processes
from infra.exceptions import ServiceExitedError, ServiceStartError


def test_parse_proc_stat_counts_fields_after_the_command_name() -> None:
    fields = " ".join(str(n) for n in range(4, 60))
    text = f"1234 (odd) name (x) {'S'} {fields}"
    state, ticks = processes.parse_proc_stat(text)
    assert state == "S"
    assert ticks == 22  # field 22 of the stat line


def test_spawned_process_runs_until_stopped_by_sigterm(tmp_path: Path) -> None:
    handle = processes.spawn(["sleep", "30"], tmp_path / "logs" / "sleep.log")
    assert processes.is_running(handle)
    assert processes.stop(handle, timeout_s=5) is processes.StopOutcome.TERMINATED
    assert not processes.is_running(handle)
    assert processes.stop(handle) is processes.StopOutcome.NOT_RUNNING


def test_process_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    handle = processes.spawn(
        ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"], log
    )
    processes.wait_until_ready(
        handle, lambda: "ready" in log.read_text(), what="stubborn", log_path=log, timeout_s=5
    )
    assert processes.stop(handle, timeout_s=0.3) is processes.StopOutcome.KILLED
    assert not processes.is_running(handle)


def test_output_goes_to_the_log_and_an_early_exit_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "boom.log"
    handle = processes.spawn(["sh", "-c", "echo boom >&2; exit 3"], log)
    with pytest.raises(ServiceExitedError, match="boom"):
        processes.wait_until_ready(handle, lambda: False, what="boom", log_path=log, timeout_s=5)


def test_a_service_that_never_answers_times_out_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "mute.log"
    handle = processes.spawn(["sh", "-c", "echo waiting; exec sleep 30"], log)
    try:
        with pytest.raises(ServiceStartError, match="did not answer") as caught:
            processes.wait_until_ready(
                handle, lambda: False, what="mute", log_path=log, timeout_s=0.3
            )
        assert not isinstance(caught.value, ServiceExitedError)
        assert "waiting" in str(caught.value)
    finally:
        processes.stop(handle)


def test_a_reused_pid_is_not_taken_for_the_recorded_process() -> None:
    me = processes.current_process()
    assert me.start_ticks is not None, "needs /proc"
    assert processes.is_running(me)
    assert not processes.is_running(dataclasses.replace(me, start_ticks=me.start_ticks + 1))


def test_handle_round_trips_through_a_dict() -> None:
    handle = processes.ProcessHandle(42, sys.executable, 123)
    assert processes.ProcessHandle.from_dict(handle.to_dict()) == handle
    assert processes.ProcessHandle.from_dict({"pid": 1, "executable": "x"}).start_ticks is None


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {n}\n" for n in range(100)))
    assert processes.log_tail(log, lines=2) == "line 98\nline 99"
    assert processes.log_tail(tmp_path / "missing.log") == ""
