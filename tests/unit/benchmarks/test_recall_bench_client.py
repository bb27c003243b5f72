"""The recall bench's own HTTP client: it reads responses by Content-Length over one keep-alive
connection and refuses what it cannot frame, its response check catches wrong answers, and its
paced run charges a request for the time it waited for a free client."""

from __future__ import annotations

import asyncio
import os
import time

import orjson
import pytest

from benchmarks.recall_bench import HttpConnection, check_candidates, paced


def _body(user_id: str, scores: list[float]) -> bytes:
    candidates = [{"item_id": f"i{i}", "score": s, "interest": 0} for i, s in enumerate(scores)]
    return orjson.dumps({"user_id": user_id, "candidates": candidates})


def test_check_candidates_accepts_a_right_answer() -> None:
    check_candidates(_body("u1", [3.0, 2.0, 2.0, 1.0]), "u1", 4)
    check_candidates(_body("u1", [3.0]), "u1", 4)  # fewer than n is allowed


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_body("u2", [3.0, 2.0]), "another user's"),
        (_body("u1", [3.0, 2.0, 1.0]), "more than n"),
        (_body("u1", []), "empty"),
        (_body("u1", [1.0, 2.0]), "not best first"),
    ],
)
def test_check_candidates_refuses_a_wrong_answer(body: bytes, why: str) -> None:
    with pytest.raises(RuntimeError, match="wrong candidates"):
        check_candidates(body, "u1", 2)


async def _serve_once(responses: list[bytes]) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in responses:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def test_two_requests_on_one_connection_read_by_content_length() -> None:
    async def scenario() -> list[tuple[int, bytes]]:
        server, base = await _serve_once(
            [
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}",
            ]
        )
        async with server:
            connection = await HttpConnection.open(base)
            try:
                return [await connection.get("/a"), await connection.get("/b")]
            finally:
                await connection.close()

    assert asyncio.run(scenario()) == [(200, b"hello"), (404, b"{}")]


def test_a_response_without_content_length_is_refused() -> None:
    async def scenario() -> None:
        server, base = await _serve_once(
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]
        )
        async with server:
            connection = await HttpConnection.open(base)
            try:
                await connection.get("/a")
            finally:
                await connection.close()

    with pytest.raises(RuntimeError, match="without Content-Length"):
        asyncio.run(scenario())


def _paced(rate: float, requests: int, clients: int, service_s: float) -> dict:
    """The paced run against a stand-in service that answers each request in ``service_s``."""

    async def single(i: int, connection: object) -> float:
        started = time.perf_counter()
        await asyncio.sleep(service_s)
        return time.perf_counter() - started

    connections = [object()] * clients
    return asyncio.run(paced(rate, requests, connections, single, [os.getpid()]))  # type: ignore[arg-type]


def test_paced_requests_below_capacity_wait_for_their_time_and_are_not_charged_for_it() -> None:
    # 2 clients, 50 requests/s, 5 ms each: a client is always free when a request is due.
    result = _paced(50, 40, 2, 0.005)
    assert result["queued_over_1ms"] == 0
    assert 0.8 < result["req_per_s"] / 50 < 1.05  # sent at the offered rate, not faster
    assert 4.5 < result["p50_ms"] < 30


def test_paced_requests_over_capacity_are_charged_for_their_queueing() -> None:
    # 1 client, 200 requests/s, 20 ms each: capacity is 50/s, so request i waits ~15·i ms.
    result = _paced(200, 30, 1, 0.02)
    assert result["queued_over_1ms"] >= 25
    assert result["req_per_s"] < 60
    # The last request was due at 145 ms and answered at ~600 ms: its latency counts the wait.
    assert result["p99_ms"] > 350
    assert result["mean_ms"] > 150
