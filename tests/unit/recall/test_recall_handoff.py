"""recall.handoff: connections passed over real Unix channels, in turn, and the channel's end."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from recall.handoff import HandoffRing, channel_pair, receive_connections


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


def test_a_closed_worker_is_skipped_and_none_left_closes_the_connection(listener: socket.socket):
    (ours_a, theirs_a), (ours_b, theirs_b) = channel_pair(), channel_pair()
    ring = HandoffRing([ours_a, ours_b])
    theirs_a.close()  # the first worker is gone
    client, server_side = accepted(listener)
    assert ring.hand_off(server_side) == 1
    theirs_b.close()
    other, server_side = accepted(listener)
    assert ring.hand_off(server_side) is None
    other.settimeout(5)
    assert other.recv(1) == b""  # closed, not left hanging
    client.close()
    other.close()
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
