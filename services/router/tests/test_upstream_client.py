"""The lean upstream client against real sockets: framing, keep-alive reuse, limits, a stale connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from ferry_router.upstream import Pool, UpstreamConnectionError, parse_head, send_request, split_url


async def serve(answer: Callable[[int], list[bytes]], *, close_after: bool = False) -> tuple[str, list[int]]:
    """A raw HTTP/1.1 server that writes ``answer(n)`` (piece by piece) for the n-th request."""
    connections: list[int] = []
    count = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        connections.append(1)
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            count += 1
            for piece in answer(count):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
            if close_after:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/completions", connections


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    p = Pool(connect_timeout=2, max_connections=8, max_per_host=2, keepalive=30)
    yield p
    p.close()


async def test_content_length_answers_reuse_one_connection(pool: Pool) -> None:
    body = b'{"ok": true}'
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    url, connections = await serve(lambda n: [head.encode(), body])
    for _ in range(3):
        response = await send_request(pool, "POST", url, b"{}", {"X-A": "1"}, 5)
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.read() == body
        response.release()
    assert len(connections) == 1
    assert pool.in_use == 0
    assert pool.idle_count() == 1


async def test_chunked_pieces_split_anywhere_arrive_in_order(pool: Pool) -> None:
    wire = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
    pieces = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"]
    pieces += [wire[i : i + 3] for i in range(0, len(wire), 3)]
    url, _ = await serve(lambda n: pieces)
    response = await send_request(pool, "POST", url, b"{}", {}, 5)
    assert [p async for p in response.content.iter_any()] != []
    response.release()
    again = await send_request(pool, "POST", url, b"{}", {}, 5)
    assert await again.read() == b"hello, world"
    again.release()


async def test_a_closed_idle_connection_is_replaced_and_a_broken_body_raises(pool: Pool) -> None:
    url, connections = await serve(
        lambda n: [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], close_after=True
    )
    for _ in range(2):  # the second call finds the first connection closed by the server
        response = await send_request(pool, "POST", url, b"{}", {}, 5)
        assert await response.read() == b"ok"
        response.release()
        await asyncio.sleep(0.05)
    assert len(connections) == 2
    short, _ = await serve(lambda n: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], close_after=True)
    response = await send_request(pool, "POST", short, b"{}", {}, 5)
    with pytest.raises(UpstreamConnectionError):
        await response.read()
    response.release()


async def test_the_per_host_bound_makes_callers_wait(pool: Pool) -> None:
    url, connections = await serve(lambda n: [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    held = [await send_request(pool, "POST", url, b"{}", {}, 5) for _ in range(2)]
    with pytest.raises(TimeoutError):
        await send_request(pool, "POST", url, b"{}", {}, 0.2)  # both slots are taken
    for response in held:
        await response.read()
        response.release()
    third = await send_request(pool, "POST", url, b"{}", {}, 5)
    assert await third.read() == b"ok"
    third.release()
    assert len(connections) == 2


def test_head_and_url_parsing() -> None:
    head, length, chunked = parse_head(b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 4")
    assert (head.status, head.keep_alive, length, chunked) == (503, False, 4, False)
    assert split_url("http://[::1]:8000/v1/x?y=1") == (("http", "::1", 8000), "[::1]:8000", "/v1/x?y=1")
    assert split_url("https://engine") == (("https", "engine", 443), "engine", "/")
