"""recall.server's listening sockets: every address of the host, and a clear error for a port in
use or a host that does not resolve."""

from __future__ import annotations

import socket

import pytest

from infra.ports import free_port
from recall.exceptions import RecallError
from recall.server import listening_sockets


def test_listens_on_the_host_and_refuses_a_second_bind_with_the_settings_named():
    port = free_port()
    sockets = listening_sockets("127.0.0.1", port)
    try:
        assert [s.getsockname() for s in sockets] == [("127.0.0.1", port)]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            connection, _ = sockets[0].accept()
            connection.close()
        with pytest.raises(RecallError) as caught:
            listening_sockets("127.0.0.1", port)
        message = str(caught.value)
        assert f"cannot listen on 127.0.0.1:{port}" in message
        assert "MINDSTREAM_RECALL_HOST, MINDSTREAM_RECALL_PORT" in message
    finally:
        for sock in sockets:
            sock.close()


def test_reuse_port_lets_two_services_share_the_port():
    port = free_port()
    first = listening_sockets("127.0.0.1", port, reuse_port=True)
    second = listening_sockets("127.0.0.1", port, reuse_port=True)
    for sock in first + second:
        sock.close()


def test_a_host_that_does_not_resolve_is_named():
    with pytest.raises(RecallError, match=r"cannot resolve no-such-host\.invalid:"):
        listening_sockets("no-such-host.invalid", free_port())
