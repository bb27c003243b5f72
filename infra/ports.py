"""Loopback ports: pick a free one, ask whether something accepts connections on one, and
whether what listens there answers its protocol's request.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Protocol, TypeVar

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class _Client(Protocol):
    def close(self) -> None: ...


ClientT = TypeVar("ClientT", bound=_Client)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now.

    The port is only free at the moment of asking; callers that spawn a server on it must
    handle the rare case where another process takes it first (see ``infra.services``).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def accepts_connections(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout_s``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout_s):
        return True
    return False


def answers_request(
    what: str,
    host: str,
    port: int,
    *,
    connect: Callable[[], ClientT],
    request: Callable[[ClientT], bool],
    errors: tuple[type[Exception], ...],
) -> bool:
    """Whether ``host:port`` accepts a connection and a client from ``connect()`` gets a true
    answer to ``request``; any of ``errors`` means "not (yet)" and is only logged at debug.
    """
    if not accepts_connections(host, port):
        return False
    try:
        client = connect()
    except errors as exc:
        logger.debug("%s probe address=%s:%d error=%r", what, host, port, exc)
        return False
    try:
        return request(client)
    except errors as exc:
        logger.debug("%s probe address=%s:%d error=%r", what, host, port, exc)
        return False
    finally:
        client.close()
