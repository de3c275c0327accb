"""The lean HTTP/1.1 pool against a scripted local server: keep-alive, chunked answers, a connection
the server closes, timeouts, the connection limit. (TLS, tokens and the API server's answers:
``tests/integration/test_kubeconn.py``.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from ferry_schemas.runtime import http1
from ferry_schemas.runtime.http1 import Pool

Handler = Callable[[int, int, bytes], Awaitable[bytes | None]]
"""(connection number, request number on it, request head) → the answer's bytes, or None to close."""


@dataclass
class Server:
    handler: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, served = self.connections, 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lengths = [line for line in head.split(b"\r\n") if line.startswith(b"Content-Length")]
                length = int(lengths[0].split(b":")[1]) if lengths else 0
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                served += 1
                answer = await self.handler(number, served, head)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def request(method: str = "GET", body: bytes = b"") -> bytes:
    head = f"{method} /x HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async def answer_ok(conn: int, nth: int, head: bytes) -> bytes | None:
        return ok()

    state = Server(answer_ok)
    listener = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield state


def pool_for(server: Server, limit: int = 4) -> Pool:
    return Pool("127.0.0.1", server.port, None, limit=limit)


async def test_requests_share_one_keep_alive_connection(server: Server) -> None:
    pool = pool_for(server)
    for _ in range(3):
        answer = await pool.fetch(request(), seconds=5, idempotent=True)
        assert (answer.status, answer.reason, answer.body) == (200, "OK", b'{"ok":true}')
    assert server.connections == 1
    pool.close()


async def test_a_connection_idle_too_long_is_not_reused(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http1, "KEEP_IDLE_SECONDS", 0.05)
    pool = pool_for(server)
    await pool.fetch(request(), seconds=5, idempotent=True)
    await asyncio.sleep(0.1)
    await pool.fetch(request(), seconds=5, idempotent=True)
    assert server.connections == 2
    pool.close()


async def test_a_chunked_answer_and_an_error_status_are_read_whole(server: Server) -> None:
    async def chunked(conn: int, nth: int, head: bytes) -> bytes | None:
        return (
            b'HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n3\r\n12}\r\n0\r\n\r\n'
        )

    server.handler = chunked
    pool = pool_for(server)
    answer = await pool.fetch(request("POST", b"{}"), seconds=5, idempotent=False)
    assert (answer.status, answer.reason, answer.body) == (409, "Conflict", b'{"a":12}')
    assert server.requests == [request("POST", b"{}")]
    pool.close()


async def test_connection_close_is_honoured(server: Server) -> None:
    async def closing(conn: int, nth: int, head: bytes) -> bytes | None:
        return ok(extra="Connection: close\r\n")

    server.handler = closing
    pool = pool_for(server)
    for _ in range(2):
        assert (await pool.fetch(request(), seconds=5, idempotent=True)).status == 200
    assert server.connections == 2
    pool.close()


async def test_an_idempotent_request_on_a_connection_the_server_dropped_is_sent_again(server: Server) -> None:
    async def drop_second(conn: int, nth: int, head: bytes) -> bytes | None:
        return None if nth == 2 else ok()  # closes the connection instead of answering

    server.handler = drop_second
    pool = pool_for(server)
    await pool.fetch(request(), seconds=5, idempotent=True)
    assert (await pool.fetch(request(), seconds=5, idempotent=True)).status == 200
    assert server.connections == 2
    # a write is not sent twice: the caller sees the disconnect (and retries by its own rules)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await pool.fetch(request("POST", b"{}"), seconds=5, idempotent=False)
    assert server.requests.count(request("POST", b"{}")) == 1
    assert (await pool.fetch(request(), seconds=5, idempotent=True)).status == 200
    assert server.connections == 3
    pool.close()


async def test_a_timeout_raises_and_its_connection_is_not_reused(server: Server) -> None:
    hold = asyncio.Event()

    async def slow_first(conn: int, nth: int, head: bytes) -> bytes | None:
        if conn == 1:
            await hold.wait()
        return ok()

    server.handler = slow_first
    pool = pool_for(server)
    with pytest.raises(TimeoutError):
        await pool.fetch(request(), seconds=0.2, idempotent=True)
    hold.set()  # the late answer must not be taken for the next request's
    assert (await pool.fetch(request(), seconds=5, idempotent=True)).body == b'{"ok":true}'
    assert server.connections == 2
    pool.close()


async def test_no_more_connections_than_the_limit(server: Server) -> None:
    release, both = asyncio.Event(), asyncio.Event()
    busy = 0
    most = 0

    async def counted(conn: int, nth: int, head: bytes) -> bytes | None:
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        if busy == 2:
            both.set()
        await release.wait()
        busy -= 1
        return ok()

    server.handler = counted
    pool = pool_for(server, limit=2)
    calls = [asyncio.create_task(pool.fetch(request(), seconds=5, idempotent=True)) for _ in range(6)]
    waiter = asyncio.create_task(pool.fetch(request(), seconds=5, idempotent=True))
    await asyncio.sleep(0)
    waiter.cancel()  # a caller cancelled while waiting for a connection leaves no trace
    await asyncio.wait_for(both.wait(), 5)
    release.set()
    answers = await asyncio.gather(*calls)
    assert [a.status for a in answers] == [200] * 6
    assert waiter.cancelled()
    assert (most, server.connections) == (2, 2)
    pool.close()


async def test_a_refused_connection_is_aiohttps_connector_error() -> None:
    """The same error as a watch's (an OSError): retry labels and log lines do not depend on the path."""
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    pool = Pool("127.0.0.1", port, None, limit=1)
    for _ in range(2):  # the failed attempt gives its place back
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await pool.fetch(request(), seconds=5, idempotent=True)
        assert isinstance(refused.value.os_error, ConnectionRefusedError)
        assert f"127.0.0.1:{port}" in str(refused.value)
