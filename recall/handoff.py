"""Accepted connections handed from the recall supervisor to its serving processes.

With several workers the supervisor owns the listening sockets, accepts each new connection
and passes its file descriptor over a Unix ``SOCK_SEQPACKET`` channel (one message per
connection, the descriptor as ``SCM_RIGHTS``) to the next worker in turn. Keep-alive
connections are therefore spread evenly, which SO_REUSEPORT's hash of the connection's address
does not do: 8 connections land 6/2 or worse on 2 processes in about one try in three.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

# The one byte that carries a descriptor (a message needs at least one byte of data).
MARK = b"c"
# Descriptors read per message: the sender puts exactly one in each.
MAX_FDS = 1


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
        """Pass ``connection`` to the next worker that takes it (a worker whose channel is
        full or closed is skipped) and close this process's copy; the position of the worker
        that took it, or None when none did (the client then sees the connection closed)."""
        try:
            for _ in range(len(self.channels)):
                position = self._next
                self._next = (self._next + 1) % len(self.channels)
                try:
                    socket.send_fds(self.channels[position], [MARK], [connection.fileno()])
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    continue
                return position
            return None
        finally:
            connection.close()

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor's end, worker's end) of one handoff channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def receive_connections(channel: socket.socket) -> list[socket.socket] | None:
    """The connections waiting on a non-blocking worker's ``channel`` (possibly none), or None
    once the supervisor has closed its end."""
    connections: list[socket.socket] = []
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(channel, len(MARK), MAX_FDS)
        except BlockingIOError:
            return connections
        if not data and not fds:
            for connection in connections:
                connection.close()
            return None
        connections.extend(socket.socket(fileno=fd) for fd in fds)
