"""The router's own HTTP/1.1 server (``ferry_router.http_server``): the official ``openai`` client
through it (answers, streams, errors), and the HTTP details a client may rely on, over raw sockets:
keep-alive, HTTP/1.0, pipelined requests, ``Expect: 100-continue``, chunked and oversized bodies,
malformed requests, HEAD, the idle timeout and a graceful shutdown with a request in hand.
"""

from __future__ import annotations

import asyncio
import gc
import re
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass

import openai
import orjson
import pytest
from aiohttp import web
from ferry_router.app import Router
from ferry_router.http_server import LeanServer
from ferry_router.observability import AccessLog
from ferry_router.proxy import UpstreamClient, UpstreamSettings
from ferry_router.ratelimit import RateLimiter
from ferry_router.scheduler import build_scheduler
from ferry_router.scheduler.config import parse_config
from ferry_router.state.table import RoutingTable

from .fake_engine import FakeEngine, free_port
from .objects import pod, route, server

BODY = orjson.dumps({"model": "m", "prompt": "hi", "max_tokens": 2})


@dataclass
class Stack:
    router_port: int
    runner: web.ServerRunner
    engine: FakeEngine
    openai: openai.AsyncOpenAI

    async def raw(self, data: bytes, *, until_closed: bool = False, answers: int = 1) -> bytes:
        """Send raw bytes; read ``answers`` complete answers with a Content-Length (or to EOF)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.router_port)
        try:
            writer.write(data)
            await writer.drain()
            return await read_answers(reader, answers, until_closed)
        finally:
            writer.close()


async def read_answers(reader: asyncio.StreamReader, answers: int, until_closed: bool) -> bytes:
    if until_closed:
        return await asyncio.wait_for(reader.read(), 10)
    out = b""
    for _ in range(answers):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lengths = [
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ]
        length = lengths[0] if lengths else 0  # 100 Continue
        out += head + await asyncio.wait_for(reader.readexactly(length), 10)
    return out


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    table = RoutingTable()
    scheduler = build_scheduler(parse_config("scheduler: {plugins: {Filter: {enabled: [least-request]}}}"))
    client = UpstreamClient(UpstreamSettings(connect_timeout=1.0, header_timeout=5.0))
    await client.start()
    router = Router(table, scheduler, RateLimiter(), client, AccessLog(enabled=False), max_body_bytes=1000)
    built = router.build_server()
    assert isinstance(built, LeanServer)
    runner = web.ServerRunner(built, shutdown_timeout=2.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    engine = FakeEngine("127.0.0.2", free_port())
    await engine.start()
    table.apply_server("default/srv", server("srv", {"app": "m"}, model="served", port=engine.port))
    table.apply_route("default/r", route("r", "m"))
    table.apply_pod("default/p0", pod("p0", {"app": "m"}, "127.0.0.2"))
    client_api = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    try:
        yield Stack(port, runner, engine, client_api)
    finally:
        await client_api.close()
        await runner.cleanup()
        await engine.stop()
        await client.close()


async def test_openai_client_answers_streams_and_errors(stack: Stack) -> None:
    chat = await stack.openai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert chat.model == "served"
    completion = await stack.openai.completions.create(model="m", prompt="hi", max_tokens=2)
    assert completion.choices[0].text == "hello"
    stack.engine.stream_delay = 0.01  # several chunks, each its own write
    stream = await stack.openai.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello"
    assert all(c.usage is None for c in chunks)  # the usage chunk the router asked for is hidden
    with pytest.raises(openai.NotFoundError) as missing:
        await stack.openai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    models = await stack.openai.models.list()
    assert [m.id for m in models.data] == ["m"]


def post(
    path: str = "/v1/completions", *, extra: str = "", body: bytes = BODY, version: str = "1.1"
) -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.router_port)
    try:
        for _ in range(3):  # one connection, request after request
            writer.write(post())
            answer = await read_answers(reader, 1, False)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"Date: " in answer
        # three requests in one write; the second asks for an unknown model
        unknown = orjson.dumps({"model": "nope", "prompt": "hi"})
        writer.write(post() + post(body=unknown) + post(extra="X-Request-Id: third\r\n"))
        answers = await read_answers(reader, 3, False)
        assert re.findall(rb"HTTP/1\.1 (\d+) ", answers) == [b"200", b"404", b"200"]
        assert stack.engine.headers_seen[-1]["x-request-id"] == "third"
        # more than the connection parses ahead (it stops reading, then resumes)
        writer.write(post() * 40)
        answers = await read_answers(reader, 40, False)
        assert re.findall(rb"HTTP/1\.1 (\d+) ", answers) == [b"200"] * 40
    finally:
        writer.close()


async def test_http_1_0_and_connection_close_end_the_connection(stack: Stack) -> None:
    answer = await stack.raw(post(version="1.0"), until_closed=True)
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Connection: close" in answer
    answer = await stack.raw(post(extra="Connection: close\r\n"), until_closed=True)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in answer
    # an HTTP/1.0 stream has no chunked framing: the body ends with the connection
    stream = orjson.dumps({"model": "m", "prompt": "hi", "stream": True})
    answer = await stack.raw(post(body=stream, version="1.0"), until_closed=True)
    assert b"Transfer-Encoding" not in answer
    assert answer.rstrip().endswith(b"data: [DONE]")


async def test_chunked_bodies_expect_continue_and_the_size_limit(stack: Stack) -> None:
    chunked = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%b\r\n0\r\n\r\n" % (len(BODY), BODY)
    )
    assert (await stack.raw(chunked)).startswith(b"HTTP/1.1 200 OK")
    answer = await stack.raw(post(extra="Expect: 100-continue\r\n"), answers=2)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    big = orjson.dumps({"model": "m", "prompt": "x" * 2000})
    answer = await stack.raw(post(body=big), until_closed=True)  # declared too large
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_too_large"
    chunked_big = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(
            b"%x\r\n%b\r\n" % (len(big[i : i + 500]), big[i : i + 500]) for i in range(0, len(big), 500)
        )
    )
    answer = await stack.raw(chunked_big + b"0\r\n\r\n", until_closed=True)  # found too large while read
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_malformed_requests_get_an_openai_error_and_the_connection_closes(stack: Stack) -> None:
    answer = await stack.raw(b"POST /v1/completions HTTP/1.1\r\nContent-Length: x\r\n\r\n", until_closed=True)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    error = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["type"] == "invalid_request_error"
    assert "malformed" in error["message"]
    # a request before the malformed one is still answered first
    answer = await stack.raw(post() + b"NOT HTTP\r\n\r\n", until_closed=True)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 400 Bad Request" in answer


async def test_head_probe_has_no_body(stack: Stack) -> None:
    answer = await stack.raw(
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", until_closed=True
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length: 16" in head
    assert body == b""


async def test_idle_keep_alive_connections_are_closed(stack: Stack) -> None:
    built = stack.runner.server
    assert isinstance(built, LeanServer)
    built.keepalive_timeout = 0.2
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.router_port)
    writer.write(post())
    await read_answers(reader, 1, False)
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the router, not by the test
    writer.close()


async def test_shutdown_lets_a_request_in_hand_finish_and_closes_idle_connections(stack: Stack) -> None:
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", stack.router_port)
    idle_writer.write(post())
    await read_answers(idle_reader, 1, False)
    stack.engine.delay = 0.3
    busy = asyncio.create_task(stack.raw(post(), until_closed=True))
    built = stack.runner.server
    assert isinstance(built, LeanServer)

    async def in_hand() -> None:  # the slow request has reached the server
        while not any(conn.task is not None for conn in built.lean):  # noqa: ASYNC110 - polled state
            await asyncio.sleep(0.01)

    await asyncio.wait_for(in_hand(), 10)
    cleanup = asyncio.create_task(stack.runner.cleanup())
    assert await asyncio.wait_for(idle_reader.read(), 10) == b""
    answer = await busy
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in answer
    await cleanup
    idle_writer.close()


async def test_a_closed_connection_is_freed_without_the_cycle_collector(stack: Stack) -> None:
    """Nothing refers back to a lost connection (the parser did): 1,000 closed streams must not
    wait for a full collection to give their memory back."""
    server = stack.runner.server
    assert isinstance(server, LeanServer)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.router_port)
    gc.disable()
    try:
        writer.write(post())
        assert (await read_answers(reader, 1, False)).startswith(b"HTTP/1.1 200 OK\r\n")
        (conn,) = server.lean
        gone = weakref.ref(conn)
        del conn
        writer.close()
        await writer.wait_closed()
        for _ in range(500):  # the server sees the close within 5 s
            if gone() is None:
                break
            await asyncio.sleep(0.01)
        assert gone() is None, "the closed connection is still referenced"
    finally:
        gc.enable()
