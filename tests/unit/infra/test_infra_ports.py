"""The readiness probe shared by the broker and Redis: a connection, then a protocol request."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from infra.ports import LOOPBACK, answers_request, free_port


class FakeClient:
    def __init__(self, answer: bool | Exception) -> None:
        self.answer = answer
        self.closed = False

    def ask(self) -> bool:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind((LOOPBACK, 0))
        server.listen()
        yield int(server.getsockname()[1])


def _probe(port: int, client: FakeClient) -> bool:
    return answers_request(
        "fake",
        LOOPBACK,
        port,
        connect=lambda: client,
        request=FakeClient.ask,
        errors=(ConnectionError, OSError),
    )


def test_true_answer_means_ready_and_the_client_is_closed(listening_port: int) -> None:
    client = FakeClient(True)
    assert _probe(listening_port, client)
    assert client.closed


def test_false_answer_means_not_ready(listening_port: int) -> None:
    client = FakeClient(False)
    assert not _probe(listening_port, client)
    assert client.closed


def test_listed_error_in_the_request_means_not_ready(listening_port: int) -> None:
    client = FakeClient(ConnectionError("reset"))
    assert not _probe(listening_port, client)
    assert client.closed


def test_listed_error_while_connecting_means_not_ready(listening_port: int) -> None:
    def refuse() -> FakeClient:
        raise ConnectionError("refused")

    assert not answers_request(
        "fake", LOOPBACK, listening_port, connect=refuse, request=FakeClient.ask, errors=(OSError,)
    )


def test_nothing_listening_is_not_ready_without_connecting() -> None:
    def must_not_connect() -> FakeClient:
        raise AssertionError("connect() called although nothing listens")

    port = free_port()
    assert not answers_request(
        "fake", LOOPBACK, port, connect=must_not_connect, request=FakeClient.ask, errors=(OSError,)
    )


def test_unlisted_error_propagates_and_the_client_is_still_closed(listening_port: int) -> None:
    client = FakeClient(ValueError("a bug, not a slow service"))
    with pytest.raises(ValueError, match="a bug"):
        _probe(listening_port, client)
    assert client.closed
