"""Spawn detached service processes, recognise them again later by PID, and stop them.

A service is started in its own session (so it survives the command that started it and a
Ctrl-C in that terminal) and is known afterwards only by a :class:`ProcessHandle` written to a
state file. Before signalling a PID the handle checks, where ``/proc`` exists, that the PID
still belongs to the same process (same start time), so a reused PID is never killed.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.exceptions import InfraError, ServiceExitedError, ServiceStartError

logger = logging.getLogger(__name__)

_PROC = Path("/proc")
_POLL_S = 0.05
# Children spawned by this process: kept so they can be reaped (no zombies, no ResourceWarning)
# when this same process stops them, as the test fixtures do.
_children: dict[int, subprocess.Popen[bytes]] = {}


class StopOutcome(enum.Enum):
    NOT_RUNNING = "not running"
    TERMINATED = "stopped by SIGTERM"
    KILLED = "killed by SIGKILL"


@dataclass(frozen=True)
class ProcessHandle:
    """What is needed to find a spawned process again: its PID and its start time."""

    pid: int
    executable: str
    # Clock ticks after boot at which the process started (field 22 of /proc/<pid>/stat);
    # None where /proc is not available.
    start_ticks: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "executable": self.executable, "start_ticks": self.start_ticks}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessHandle:
        ticks = data.get("start_ticks")
        return cls(
            pid=int(data["pid"]),
            executable=str(data["executable"]),
            start_ticks=None if ticks is None else int(ticks),
        )


def parse_proc_stat(text: str) -> tuple[str, int]:
    """(state letter, start time in ticks) from the text of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may itself hold spaces or parentheses, so
    the fields are counted from the last closing parenthesis.
    """
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])


def _read_proc_stat(pid: int) -> tuple[str, int] | None:
    try:
        return parse_proc_stat((_PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessHandle:
    """Start ``argv`` detached from this process; stdout and stderr go to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            list(argv),
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    stat = _read_proc_stat(proc.pid)
    handle = ProcessHandle(proc.pid, str(argv[0]), None if stat is None else stat[1])
    logger.debug("spawned pid=%d argv=%s log=%s", proc.pid, list(argv), log_path)
    return handle


def current_process() -> ProcessHandle:
    """The handle of this very process (used to mark services owned by a test session)."""
    stat = _read_proc_stat(os.getpid())
    return ProcessHandle(os.getpid(), sys.executable, None if stat is None else stat[1])


def is_running(handle: ProcessHandle) -> bool:
    """Whether the process of ``handle`` is alive (a zombie or a reused PID counts as gone)."""
    child = _children.get(handle.pid)
    if child is not None:
        # Our own child: its PID cannot be reused before we reap it, which poll() does.
        if child.poll() is None:
            return True
        _children.pop(handle.pid, None)
        return False
    if _PROC.is_dir():
        stat = _read_proc_stat(handle.pid)
        if stat is None or stat[0] == "X":
            return False
        if stat[0] == "Z" and not _threads_left(handle.pid):
            return False
        return handle.start_ticks is None or stat[1] == handle.start_ticks
    try:
        os.kill(handle.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _threads_left(pid: int) -> bool:
    """Whether a zombie thread-group leader still has live threads: a JVM's main thread can
    end before the others, which still hold its sockets while they shut down."""
    try:
        return sum(1 for _ in (_PROC / str(pid) / "task").iterdir()) > 1
    except OSError:
        return False


def wait_until_gone(handle: ProcessHandle, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the process to end; True when it did."""
    deadline = time.monotonic() + timeout_s
    while is_running(handle):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def wait_until_ready(
    handle: ProcessHandle,
    probe: Callable[[], bool],
    *,
    what: str,
    log_path: Path,
    timeout_s: float,
) -> None:
    """Call ``probe`` until it returns True; raise if the process ends or time runs out first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not is_running(handle):
            raise ServiceExitedError(
                f"{what} (pid {handle.pid}) exited while starting; log {log_path}:\n"
                f"{log_tail(log_path)}"
            )
        if probe():
            return
        if time.monotonic() >= deadline:
            raise ServiceStartError(
                f"{what} (pid {handle.pid}) did not answer within {timeout_s:.0f}s; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(_POLL_S)


def _signal(handle: ProcessHandle, sig: signal.Signals) -> None:
    # The service leads its own session (see spawn), so signal its whole process group:
    # anything it started goes with it.
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(handle.pid) == handle.pid:
            os.killpg(handle.pid, sig)
        else:
            os.kill(handle.pid, sig)


def stop(handle: ProcessHandle, timeout_s: float = 10.0) -> StopOutcome:
    """SIGTERM the process, then SIGKILL it if it has not ended after ``timeout_s``."""
    if not is_running(handle):
        return StopOutcome.NOT_RUNNING
    _signal(handle, signal.SIGTERM)
    return _await_stop(handle, timeout_s)


def _await_stop(handle: ProcessHandle, timeout_s: float) -> StopOutcome:
    """After SIGTERM: wait up to ``timeout_s``, then SIGKILL."""
    if wait_until_gone(handle, timeout_s):
        return StopOutcome.TERMINATED
    logger.warning("pid=%d ignored SIGTERM for %.1fs; sending SIGKILL", handle.pid, timeout_s)
    _signal(handle, signal.SIGKILL)
    if wait_until_gone(handle, 5.0):
        return StopOutcome.KILLED
    raise InfraError(f"process {handle.pid} ({handle.executable}) is still alive after SIGKILL")


def stop_many(handles: Sequence[ProcessHandle], timeout_s: float = 10.0) -> list[StopOutcome]:
    """:func:`stop` for several processes at once: all get SIGTERM first, then each gets up to
    ``timeout_s`` to end. Members of one cluster stopped one by one would each wait for the
    others during their own shutdown."""
    outcomes: dict[int, StopOutcome] = {}
    for handle in handles:
        if is_running(handle):
            _signal(handle, signal.SIGTERM)
        else:
            outcomes[handle.pid] = StopOutcome.NOT_RUNNING
    deadline = time.monotonic() + timeout_s
    for handle in handles:
        if handle.pid not in outcomes:
            outcomes[handle.pid] = _await_stop(handle, max(0.0, deadline - time.monotonic()))
    return [outcomes[h.pid] for h in handles]


def kill(handle: ProcessHandle) -> StopOutcome:
    """SIGKILL the process at once (a crash, for fault tests); wait until it is gone."""
    if not is_running(handle):
        return StopOutcome.NOT_RUNNING
    _signal(handle, signal.SIGKILL)
    if wait_until_gone(handle, 5.0):
        return StopOutcome.KILLED
    raise InfraError(f"process {handle.pid} ({handle.executable}) is still alive after SIGKILL")


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 16_384))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
