"""Running the recall service: load the current bundle's index, then serve until stopped.

One process serves by default. With ``MINDSTREAM_RECALL_WORKERS`` above 1 the process started
becomes a supervisor: it builds (or checks) the cached index once, starts that many serving
processes (``python -m recall serve``) that share the port with SO_REUSEPORT, and stops them
all on SIGTERM/SIGINT, or when one of them exits (a broken worker stops the service rather than
being restarted in a loop; the process manager above decides what happens next).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

from aiohttp import web

from mindstream.settings import Settings
from recall.exceptions import RecallError
from recall.registry import IndexRegistry
from recall.service import create_app

logger = logging.getLogger(__name__)

READY_LINE = "recall serving on"
WORKER_STOP_TIMEOUT_S = 15.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it comes with faust-streaming), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(settings: Settings) -> None:
    """Serve HTTP until SIGINT or SIGTERM: in this process, or in ``recall_workers`` processes
    sharing the port."""
    if settings.recall_workers > 1:
        serve_workers(settings)
    else:
        serve_one(settings)


def serve_one(settings: Settings) -> None:
    """Load the bundle's index (failing fast if there is none), then serve HTTP until SIGINT or
    SIGTERM; in-flight requests get ``shutdown_timeout`` seconds to finish."""
    registry = IndexRegistry(settings, progress=sys.stderr.isatty(), freeze_gc=True)
    item_index = registry.load(settings.bundle_path)
    app = create_app(settings, registry)
    print(
        f"{READY_LINE} http://{settings.recall_host}:{settings.recall_port} "
        f"model={item_index.version} index={item_index.kind} items={item_index.n_items} "
        f"pid={os.getpid()}",
        flush=True,
    )
    web.run_app(
        app,
        host=settings.recall_host,
        port=settings.recall_port,
        access_log=None,
        print=None,
        shutdown_timeout=10.0,
        reuse_port=settings.recall_reuse_port or None,
        loop=new_event_loop(),
    )


class _Stop(Exception):
    """SIGTERM reached the supervisor."""


def serve_workers(settings: Settings) -> None:
    """Build or check the cached index once, start ``recall_workers`` serving processes on one
    port, print the ready line once all of them have loaded, and wait."""
    from model_export.bundle import load_bundle
    from recall.index import open_index

    # Loaded here first so that the workers find the index cached instead of each building it.
    item_index = open_index(
        load_bundle(settings.bundle_path), settings, progress=sys.stderr.isatty()
    )
    version, kind, n_items = item_index.version, item_index.kind, item_index.n_items
    del item_index
    worker_settings = dataclasses.replace(settings, recall_workers=1, recall_reuse_port=True)
    env = {**os.environ, **worker_settings.as_env()}
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    with _workers(settings.recall_workers, env) as workers:
        try:
            for position, worker in enumerate(workers):
                line = worker.stdout.readline() if worker.stdout is not None else ""
                if READY_LINE not in line:
                    raise RecallError(
                        f"recall worker {position} (pid {worker.pid}) did not start (exit "
                        f"{worker.poll()}); see its log above"
                    )
            print(
                f"{READY_LINE} http://{settings.recall_host}:{settings.recall_port} "
                f"model={version} index={kind} items={n_items} workers={len(workers)} "
                f"pids={','.join(str(w.pid) for w in workers)}",
                flush=True,
            )
            # Blocks until a worker exits; SIGTERM/SIGINT interrupt it through their handlers.
            pid, status = os.waitpid(-1, 0)
            raise RecallError(
                f"recall worker pid {pid} exited ({_exit_text(status)}): stopping the others"
            )
        except (_Stop, KeyboardInterrupt):
            logger.info("stopping %d recall workers", len(workers))
        finally:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _workers(count: int, env: dict[str, str]) -> Iterator[list[subprocess.Popen[str]]]:
    workers: list[subprocess.Popen[str]] = []
    try:
        for _ in range(count):
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "recall", "serve"],
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        yield workers
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.error("recall worker pid %d ignored SIGTERM; killing it", worker.pid)
                worker.kill()
                worker.wait()


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"
