"""Accepted connections handed from the recall supervisor to its serving processes.

With several workers the supervisor owns the listening sockets, accepts each new connection
and passes its file descriptor over a Unix stream socket (one byte per connection, the
descriptor attached as ``SCM_RIGHTS``) to the next worker in turn. Keep-alive connections are
therefore spread evenly, which SO_REUSEPORT's hash of the connection's address does not do:
the bench's 8 connections landed 6/2 or worse on 2 processes in 6 of 10 starts.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

# The one byte that carries a descriptor (a message needs at least one byte of data); reading
# one byte at a time takes exactly the descriptor sent with it.
MARK = b"c"
# A channel that cannot take another descriptor now: its buffer is full (the worker is busy),
# or the kernel's limit of descriptors in flight is reached, or the worker is gone.
_NOT_NOW = (BlockingIOError, BrokenPipeError, ConnectionResetError)


class HandoffRing:
    """The supervisor's side: one channel per worker, connections given out in turn."""

    def __init__(self, channels: Sequence[socket.socket]) -> None:
        if not channels:
            raise ValueError("a handoff ring needs at least one channel")
        for channel in channels:
            channel.setblocking(False)
        self.channels = list(channels)
        self._next = 0

    def hand_off(self, connection: socket.socket) -> int | None:
        """Pass ``connection`` to the next worker whose channel takes it, then close this
        process's copy; the position of that worker, or None when no channel takes it now (the
        connection stays open: the caller keeps it and tries again once a channel drains)."""
        for _ in range(len(self.channels)):
            position = self._next
            self._next = (self._next + 1) % len(self.channels)
            try:
                socket.send_fds(self.channels[position], [MARK], [connection.fileno()])
            except _NOT_NOW:
                continue
            except OSError as exc:
                if exc.errno == errno.ETOOMANYREFS:
                    continue
                raise
            connection.close()
            return position
        return None

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor's end, worker's end) of one handoff channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def receive_connections(channel: socket.socket) -> list[socket.socket] | None:
    """The connections waiting on a non-blocking worker's ``channel`` (possibly none), or None
    once the supervisor has closed its end."""
    connections: list[socket.socket] = []
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(channel, len(MARK), 1)
        except BlockingIOError:
            return connections
        connections.extend(socket.socket(fileno=fd) for fd in fds)
        if not data:
            for connection in connections:
                connection.close()
            return None
