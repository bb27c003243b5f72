"""Running the recall service: load the current bundle's index, then serve until stopped.

One process serves by default: it binds the port once its index is loaded, prints the ready
line, and serves. With ``MINDSTREAM_RECALL_WORKERS`` above 1 the process started becomes a
supervisor: it builds (or checks) the cached index once, binds the port, starts that many
serving processes (``python -m recall serve``), and hands each connection it accepts to the
next worker in turn (``recall.handoff``), so keep-alive connections are spread evenly; with
``MINDSTREAM_RECALL_REUSE_PORT`` the workers instead each accept on their own SO_REUSEPORT
socket (no hop through the supervisor per connection, but the kernel's hash spreads few
connections unevenly). It prints the ready line once every worker serves, and stops them all
on SIGTERM/SIGINT or when one of them exits (a broken worker stops the service rather than
being restarted in a loop; the process manager above decides what happens next). A worker
whose supervisor is gone stops too (handing off only: it sees its channel close).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from aiohttp import web

from mindstream.settings import Settings
from recall.exceptions import RecallError
from recall.handoff import HandoffRing, channel_pair, receive_connections
from recall.registry import IndexRegistry
from recall.service import create_app

logger = logging.getLogger(__name__)

READY_LINE = "recall serving on"
WORKER_STOP_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 10.0
LISTEN_BACKLOG = 1024
# How often the supervisor looks for a worker that exited, between accepts.
WORKER_CHECK_INTERVAL_S = 0.2
# Pause after an accept that failed for want of descriptors (EMFILE), before trying again.
ACCEPT_RETRY_S = 0.1
# Connections accepted per wake-up at most, before they are handed off.
ACCEPT_BATCH = 64


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it comes with faust-streaming), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(settings: Settings, *, handoff_fd: int | None = None) -> None:
    """Serve HTTP until SIGINT or SIGTERM: in this process, in ``recall_workers`` processes
    behind this one, or (``handoff_fd``) as one of those workers."""
    if handoff_fd is not None:
        serve_handed_off(settings, handoff_fd)
    elif settings.recall_workers > 1:
        serve_workers(settings)
    else:
        serve_one(settings)


def listening_sockets(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Sockets listening on every address ``host`` resolves to, or a RecallError naming the
    settings (a port in use, an address this machine does not have)."""
    where = f"{host}:{port} (MINDSTREAM_RECALL_HOST, MINDSTREAM_RECALL_PORT)"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise RecallError(f"cannot resolve {where}: {exc}") from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # "::" would otherwise also take the IPv4 port that "0.0.0.0" binds next.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise RecallError(f"cannot listen on {where}: {exc}") from exc
    return sockets


def _loaded_app(settings: Settings, *, progress: bool) -> tuple[web.Application, str]:
    """The app over the bundle's loaded index (failing fast if there is none), and the ready
    line a serving process prints once it takes connections."""
    registry = IndexRegistry(settings, progress=progress, freeze_gc=True)
    item_index = registry.load(settings.bundle_path)
    ready = (
        f"{READY_LINE} http://{settings.recall_host}:{settings.recall_port} "
        f"model={item_index.version} index={item_index.kind} items={item_index.n_items} "
        f"pid={os.getpid()}"
    )
    return create_app(settings, registry), ready


def serve_one(settings: Settings) -> None:
    """Load the bundle's index (failing fast if there is none), bind the port, then serve HTTP
    until SIGINT or SIGTERM; in-flight requests get ``SHUTDOWN_TIMEOUT_S`` to finish."""
    app, ready = _loaded_app(settings, progress=sys.stderr.isatty())
    sockets = listening_sockets(
        settings.recall_host, settings.recall_port, reuse_port=settings.recall_reuse_port
    )
    # Printed once the port is bound: a client that connects now is served.
    print(ready, flush=True)
    web.run_app(
        app,
        sock=sockets,
        access_log=None,
        print=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        loop=new_event_loop(),
    )


def serve_handed_off(settings: Settings, handoff_fd: int) -> None:
    """A worker: load the index, then serve the connections the supervisor hands over
    ``handoff_fd`` until SIGINT, SIGTERM or the supervisor closes the channel."""
    channel = socket.socket(fileno=handoff_fd)
    app, ready = _loaded_app(settings, progress=False)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(_serve_channel(app, channel, ready))


async def _serve_channel(app: web.Application, channel: socket.socket, ready: str) -> None:
    loop = asyncio.get_running_loop()
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    server = runner.server
    if server is None:
        raise RecallError("the recall app did not set up its HTTP server")
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    adopting: set[asyncio.Task[None]] = set()

    def on_readable() -> None:
        connections = receive_connections(channel)
        if connections is None:
            logger.info("the recall supervisor closed the connection channel: stopping")
            loop.remove_reader(channel.fileno())
            stop.set()
            return
        for connection in connections:
            task = loop.create_task(_adopt(loop, server, connection))
            adopting.add(task)
            task.add_done_callback(adopting.discard)

    channel.setblocking(False)
    loop.add_reader(channel.fileno(), on_readable)
    print(ready, flush=True)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(channel.fileno())
        channel.close()
        await runner.cleanup()


async def _adopt(
    loop: asyncio.AbstractEventLoop, server: web.Server, connection: socket.socket
) -> None:
    try:
        await loop.connect_accepted_socket(server, connection)
    except OSError as exc:  # the client left between the accept and here
        connection.close()
        logger.info("a handed-off connection could not be served: %s", exc)


class _Stop(Exception):
    """SIGTERM reached the supervisor."""


def serve_workers(settings: Settings) -> None:
    """Build or check the cached index once, start ``recall_workers`` serving processes, print
    the ready line once all of them serve, and hand them the connections (or, with
    ``recall_reuse_port``, let each accept its own on a SO_REUSEPORT socket) until one exits
    or SIGTERM/SIGINT."""
    from model_export.bundle import load_bundle
    from recall.index import open_index

    # Loaded here first so that the workers find the index cached instead of each building it.
    item_index = open_index(
        load_bundle(settings.bundle_path), settings, progress=sys.stderr.isatty()
    )
    version, kind, n_items = item_index.version, item_index.kind, item_index.n_items
    del item_index
    reuse_port = settings.recall_reuse_port
    # Bound before any worker starts, so that a port in use fails at once.
    listeners = listening_sockets(settings.recall_host, settings.recall_port, reuse_port=reuse_port)
    if reuse_port:  # the workers bind their own sockets; this one only checked the port
        for listener in listeners:
            listener.close()
        listeners = []
    worker_settings = dataclasses.replace(settings, recall_workers=1)
    env = {**os.environ, **worker_settings.as_env()}
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with _workers(settings.recall_workers, env, handoff=not reuse_port) as (workers, ring):
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
                pid, status = os.waitpid(-1, 0) if ring is None else dispatch(listeners, ring)
                raise RecallError(
                    f"recall worker pid {pid} exited ({_exit_text(status)}): stopping the others"
                )
            except (_Stop, KeyboardInterrupt):
                logger.info("stopping %d recall workers", len(workers))
            finally:
                # No new connections while the workers finish the requests they hold.
                for listener in listeners:
                    listener.close()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _child_exited() -> tuple[int, int] | None:
    pid, status = os.waitpid(-1, os.WNOHANG)
    return (pid, status) if pid else None


def dispatch(
    listeners: Sequence[socket.socket],
    ring: HandoffRing,
    exited: Callable[[], tuple[int, int] | None] = _child_exited,
) -> tuple[int, int]:
    """Accept connections and hand them to the workers in turn until ``exited`` reports a
    worker gone (by default: any child process); returns its pid and wait status. While every
    worker's channel is full (all busy), the connections already accepted wait here and new
    ones in the kernel's accept queue; none is closed."""
    waiting: collections.deque[socket.socket] = collections.deque()
    with selectors.DefaultSelector() as selector:
        for listener in listeners:
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ)
        accepting = True
        try:
            while True:
                for key, _ in selector.select(timeout=WORKER_CHECK_INTERVAL_S):
                    if key.events & selectors.EVENT_READ:
                        waiting.extend(_accept_waiting(key.fileobj))  # type: ignore[arg-type]
                while waiting and ring.hand_off(waiting[0]) is not None:
                    waiting.popleft()
                if accepting == bool(waiting):
                    # While connections wait here, wait for a channel to drain instead of
                    # accepting more; then the other way round.
                    accepting = not waiting
                    for listener in listeners:
                        _watch(selector, listener, selectors.EVENT_READ, accepting)
                    for channel in ring.channels:
                        _watch(selector, channel, selectors.EVENT_WRITE, not accepting)
                gone = exited()
                if gone is not None:
                    return gone
        finally:
            for connection in waiting:
                connection.close()


def _watch(selector: selectors.BaseSelector, sock: socket.socket, events: int, on: bool) -> None:
    if on:
        selector.register(sock, events)
    else:
        selector.unregister(sock)


def _accept_waiting(listener: socket.socket) -> list[socket.socket]:
    accepted: list[socket.socket] = []
    while len(accepted) < ACCEPT_BATCH:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            break
        except ConnectionAbortedError:  # the client gave up before the accept
            continue
        except OSError as exc:  # out of descriptors: the waiting clients stay queued
            logger.error("recall supervisor cannot accept connections: %s", exc)
            time.sleep(ACCEPT_RETRY_S)
            break
        accepted.append(connection)
    return accepted


@contextlib.contextmanager
def _workers(
    count: int, env: dict[str, str], *, handoff: bool
) -> Iterator[tuple[list[subprocess.Popen[str]], HandoffRing | None]]:
    """``count`` worker processes, each with a connection channel when ``handoff``."""
    workers: list[subprocess.Popen[str]] = []
    ours: list[socket.socket] = []
    try:
        for _ in range(count):
            command = [sys.executable, "-m", "recall", "serve"]
            theirs = None
            if handoff:
                mine, theirs = channel_pair()
                ours.append(mine)
                command += ["--handoff-fd", str(theirs.fileno())]
            try:
                workers.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        stdout=subprocess.PIPE,
                        text=True,
                        pass_fds=() if theirs is None else (theirs.fileno(),),
                    )
                )
            finally:
                if theirs is not None:
                    theirs.close()
        yield workers, HandoffRing(ours) if handoff else None
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
        for channel in ours:
            channel.close()


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"
