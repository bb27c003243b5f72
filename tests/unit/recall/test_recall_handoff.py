"""recall.handoff and the supervisor's dispatch: connections passed over real Unix channels, in
turn; none lost while the workers are busy; the channel's end."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from recall.handoff import HandoffRing, channel_pair, receive_connections
from recall.server import dispatch


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def accepted(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    """(client, the server side of its connection)."""
    client = socket.create_connection(listener.getsockname())
    server_side, _ = listener.accept()
    return client, server_side


def test_connections_go_to_the_workers_in_turn_and_stay_usable(listener: socket.socket):
    pairs = [channel_pair() for _ in range(3)]
    ring = HandoffRing([ours for ours, _ in pairs])
    clients = []
    taken_by = []
    for _ in range(7):
        client, server_side = accepted(listener)
        clients.append(client)
        taken_by.append(ring.hand_off(server_side))
        assert server_side.fileno() == -1  # the supervisor's copy is closed
    assert taken_by == [0, 1, 2, 0, 1, 2, 0]
    for _, theirs in pairs:
        theirs.setblocking(False)
    received = [receive_connections(theirs) for _, theirs in pairs]
    assert [len(r or []) for r in received] == [3, 2, 2]
    # The worker's socket is the client's connection: what one side sends, the other reads.
    queues = [list(r or []) for r in received]
    order = [queues[position].pop(0) for position in taken_by]
    for client, connection in zip(clients, order, strict=True):
        client.sendall(b"ping")
        assert connection.recv(4) == b"ping"
        connection.sendall(b"pong")
        assert client.recv(4) == b"pong"
        connection.close()
        client.close()
    ring.close()


def test_full_or_closed_channels_are_skipped_and_none_free_keeps_the_connection(
    listener: socket.socket,
):
    (ours_a, theirs_a), (ours_b, theirs_b) = channel_pair(), channel_pair()
    ring = HandoffRing([ours_a, ours_b])
    theirs_a.close()  # the first worker is gone
    client, server_side = accepted(listener)
    assert ring.hand_off(server_side) == 1
    # The second worker reads nothing (busy): its channel fills up.
    ours_b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    kept = []
    for _ in range(1000):
        other, server_side = accepted(listener)
        kept.append(other)
        if ring.hand_off(server_side) is None:
            break
    else:
        pytest.fail("a channel nobody reads took 1,000 connections")
    # Not taken: still open here, so the caller can hand it off later.
    assert server_side.fileno() != -1
    theirs_b.setblocking(False)
    assert len(receive_connections(theirs_b) or []) == len(kept)  # the first and all but one
    assert ring.hand_off(server_side) == 1
    for sock in [client, *kept, theirs_b]:
        sock.close()
    ring.close()


def test_receive_reports_nothing_waiting_and_the_supervisor_gone():
    ours, theirs = channel_pair()
    theirs.setblocking(False)
    assert receive_connections(theirs) == []
    ours.close()
    assert receive_connections(theirs) is None
    theirs.close()


def test_a_ring_needs_a_channel():
    with pytest.raises(ValueError, match="at least one channel"):
        HandoffRing([])


def test_dispatch_keeps_connections_while_workers_are_busy_and_delivers_them_all(
    listener: socket.socket,
):
    pairs = [channel_pair() for _ in range(2)]
    for ours, _ in pairs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ring = HandoffRing([ours for ours, _ in pairs])
    stop = threading.Event()
    result: list[tuple[int, int]] = []
    thread = threading.Thread(
        target=lambda: result.append(
            dispatch([listener], ring, exited=lambda: (1, 0) if stop.is_set() else None)
        )
    )
    thread.start()
    try:
        # Far more connections than the two unread channels hold: the rest wait, none closed.
        clients = [socket.create_connection(listener.getsockname()) for _ in range(100)]
        time.sleep(0.5)
        for client in clients:
            client.setblocking(False)
            with pytest.raises(BlockingIOError):  # open, nothing to read, not closed (b"")
                client.recv(1)
        received: list[socket.socket] = []
        deadline = time.monotonic() + 10
        while len(received) < len(clients):
            assert time.monotonic() < deadline, f"{len(received)} of {len(clients)} delivered"
            for _, theirs in pairs:
                theirs.setblocking(False)
                received += receive_connections(theirs) or []
            time.sleep(0.01)
        # Every connection reached a worker once and still talks to its client.
        peers = {r.getpeername() for r in received}
        assert peers == {c.getsockname() for c in clients}
        for connection in received:
            connection.sendall(b"ok")
            connection.close()
        for client in clients:
            client.setblocking(True)
            client.settimeout(5)
            assert client.recv(2) == b"ok"
            client.close()
    finally:
        stop.set()
        thread.join(timeout=10)
    assert result == [(1, 0)]
    ring.close()
    for _, theirs in pairs:
        theirs.close()
