"""The router's own HTTP/1.1 server: an asyncio protocol over httptools' C parser (llhttp).

aiohttp's server costs, per request, a wake-up of the connection's reader task, a new task for the
handler, a ``web.Request`` with its URL and header objects, a payload stream and a response writer.
On the router's own port none of that is needed: a request is parsed in ``data_received`` (one C
call, a few callbacks), its body is buffered (the router reads every body whole), and its handler
task is created right there, so the handler runs in the next loop turn; the answer is written with
one ``write`` (head and body), a stream with one ``write`` per chunk.

The handlers are the same as on aiohttp's server (``Router.build_server``): :class:`LeanRequest`
has the part of ``web.Request`` the router's pipeline reads (method, path, query, headers, version,
transport, body, per-request values), and the answer is an aiohttp ``web.Response`` (serialised
here) or a stream opened with :func:`stream_response`. Keep-alive (with an idle timeout), HTTP/1.0,
``Expect: 100-continue``, chunked request bodies, the body size limit (413 from the pipeline) and
graceful shutdown (``pre_shutdown``/``shutdown`` as aiohttp's runner calls them) are kept;
pipelined requests are answered in order. Gateway listeners stay on aiohttp's server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools
from aiohttp import web
from aiohttp.http import HttpVersion, HttpVersion10, HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy

from ferry_router import errors

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEEPALIVE_TIMEOUT = 75.0  # aiohttp's default
MAX_HEAD_BYTES = 64 * 1024
MAX_PIPELINED = 16  # requests parsed ahead of their answers before the connection stops reading
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_SKIPPED = frozenset({"content-length", "transfer-encoding", "connection", "date"})


class _Date:
    """The ``Date`` header, formatted once per second."""

    second = 0
    value = b""

    @classmethod
    def header(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.value = now, f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
        return cls.value


def _head(status: int, reason: str, headers: Mapping[str, str], extra: str, version: HttpVersion) -> bytes:
    lines = [f"HTTP/{version.major}.{version.minor} {status} {reason or _REASONS.get(status, '')}\r\n"]
    for name, value in headers.items():
        if name.lower() not in _SKIPPED:
            lines.append(f"{name}: {value}\r\n")
    lines.append(extra)
    return "".join(lines).encode("latin-1")


class LeanRequest:
    """What the router's pipeline reads of a request (a duck-typed subset of ``web.Request``)."""

    __slots__ = (
        "_conn",
        "_state",
        "body",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query_string",
        "raw_path",
        "too_large",
        "version",
    )

    def __init__(
        self,
        conn: LeanConnection,
        method: str,
        target: bytes,
        headers: CIMultiDictProxy[str],
        body: bytes,
        version: HttpVersion,
        keep_alive: bool,
        too_large: bool,
    ) -> None:
        self._conn = conn
        self._state: dict[Any, Any] | None = None
        self.method = method
        raw = target.decode("latin-1")
        if not raw.startswith("/"):  # absolute form (``POST http://host/path``)
            url = httptools.parse_url(target)
            query = f"?{url.query.decode('latin-1')}" if url.query else ""
            raw = (url.path or b"/").decode("latin-1") + query
        self.raw_path = raw
        path, _, query = raw.partition("?")
        self.path = unquote(path) if "%" in path else path
        self.query_string = unquote(query) if "%" in query else query
        self.headers = headers
        self.body = body
        self.version = version
        self.keep_alive = keep_alive
        self.too_large = too_large

    @property
    def path_qs(self) -> str:
        return self.raw_path

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._conn.transport

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    async def read(self) -> bytes:
        if self.too_large:
            limit = self._conn.server.max_body_bytes
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit + 1)
        return self.body

    # per-request values, as ``web.Request`` keeps them
    def get(self, key: Any, default: Any = None) -> Any:
        return default if self._state is None else self._state.get(key, default)

    def __getitem__(self, key: Any) -> Any:
        if self._state is None:
            raise KeyError(key)
        return self._state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._state is None:
            self._state = {}
        self._state[key] = value


class LeanStream(web.StreamResponse):
    """A streamed answer on a :class:`LeanConnection`: chunked (HTTP/1.1), one ``write`` per chunk."""

    def __init__(self, status: int, headers: Mapping[str, str] | None) -> None:
        super().__init__(status=status, headers=headers)
        self._conn: LeanConnection | None = None
        self._chunked = True
        self._done = False

    async def prepare(self, request: web.BaseRequest) -> None:
        lean = cast(LeanRequest, request)
        conn = self._conn = lean._conn
        self._chunked = lean.version >= HttpVersion11
        if not self._chunked:
            lean.keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
        extra = "Transfer-Encoding: chunked\r\n" if self._chunked else ""
        if not lean.keep_alive:
            extra += "Connection: close\r\n"
        head = _head(self.status, self.reason, self.headers, extra, lean.version)
        conn.send(head + _Date.header() + b"\r\n")

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        conn = self._conn
        assert conn is not None, "prepare() first"
        if not data:
            return
        if self._chunked:
            conn.send(b"%x\r\n%b\r\n" % (len(data), bytes(data)))
        else:
            conn.send(bytes(data))
        if conn.write_paused:
            await conn.drained()

    async def write_eof(self, data: bytes = b"") -> None:
        if self._done:
            return
        if data:
            await self.write(data)
        self._done = True
        if self._chunked and self._conn is not None:
            self._conn.send(b"0\r\n\r\n")

    def end_now(self) -> None:
        """End a stream its writer left unfinished (an error after its first bytes)."""
        if not self._done:
            self._done = True
            if self._chunked and self._conn is not None and self._conn.transport is not None:
                self._conn.transport.write(b"0\r\n\r\n")


def stream_response(
    request: web.Request, status: int, headers: Mapping[str, str] | None
) -> web.StreamResponse:
    """A streamed answer for ``request``, on whichever server it came in (``prepare`` it, then write)."""
    if isinstance(request, LeanRequest):
        return LeanStream(status, headers)
    return web.StreamResponse(status=status, headers=headers)


class LeanConnection(asyncio.Protocol):
    """One client connection: parse, run the handler, write the answer; requests in order."""

    def __init__(self, server: LeanServer) -> None:
        self.server = server
        self.loop = server.loop
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        """None once the connection is gone: the parser refers back to this protocol, and that cycle
        would keep the connection's objects until a full collection (after 1,000 streams: thousands)."""
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._target = b""
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._too_large = False
        self._pending: deque[LeanRequest] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        """No request after the one in hand (shutdown, ``Connection: close``, a parse error)."""
        self.last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._rejection = b""
        """The error answer to a malformed request, sent once the requests before it are answered."""

    # ---------------------------------------------------------------- transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.lean.add(self)
        self.last_active = self.loop.time()
        self._idle_timer = self.loop.call_at(self.last_active + self.server.keepalive_timeout, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closing = True
        self.parser = None
        self.server.lean.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._wake_drain()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    async def drained(self) -> None:
        """Wait until the client has taken what was written (or is gone: then raise)."""
        if self.transport is None:
            raise ConnectionResetError("the client closed the connection")
        if self.write_paused:
            self._drain = self.loop.create_future()
            await self._drain

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(data)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _idle(self) -> None:
        """Close a keep-alive connection idle for the timeout (one timer, re-armed from the last use)."""
        due = self.last_active + self.server.keepalive_timeout
        if self.task is None and self.loop.time() >= due:
            self.close()
        else:
            self._idle_timer = self.loop.call_at(max(due, self.loop.time() + 1.0), self._idle)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if self.closing or parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported here")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")

    def _reject(self, status: int, message: str) -> None:
        """A request that cannot be parsed: an OpenAI-style error, then the connection closes
        (after the answers of the requests before it)."""
        self.closing = True
        self.parser = None  # stop parsing the rest
        error = errors.client_error(status, message, "bad_request", "bad_request")
        body = error.body()
        answer = (
            _head(status, "", {"Content-Type": "application/json"}, "Connection: close\r\n", HttpVersion11)
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        if self.task is None:
            if self.transport is not None:
                self.transport.write(answer)
            self.close()
        else:
            self._rejection = answer

    # ---------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        self._target = b""
        self._headers = []
        self._head_bytes = 0
        self._body = []
        self._body_bytes = 0
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._target += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError("request head too large")
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == "content-length" and value.isdigit() and int(value) > self.server.max_body_bytes:
                self._too_large = True
            elif (
                lowered == "expect"
                and value.lower() == "100-continue"
                and not self._too_large
                and self.transport is not None
            ):
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return  # read and dropped; the pipeline answers 413
        self._body_bytes += len(body)
        if self._body_bytes > self.server.max_body_bytes:
            self._too_large = True
            self._body = []
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        assert parser is not None, "parsed after the connection was lost"
        version = HttpVersion11 if parser.get_http_version() == "1.1" else HttpVersion10
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = LeanRequest(
            self,
            parser.get_method().decode("latin-1"),
            self._target,
            CIMultiDictProxy(CIMultiDict(self._headers)),
            body,
            version,
            parser.should_keep_alive() and not self._too_large,
            self._too_large,
        )
        # the request holds copies: a stream's connection keeps no second set for its whole life
        self._headers, self._body, self._target = [], [], b""
        if self.task is None:
            self.task = self.loop.create_task(self._serve(request))
            return
        self._pending.append(request)
        if len(self._pending) >= MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()  # resumed once the requests in hand are answered

    # ---------------------------------------------------------------- answering

    async def _serve(self, request: LeanRequest) -> None:
        """Answer ``request`` and then any request that arrived behind it."""
        handler = self.server.handler
        try:
            while True:
                try:
                    response = await handler(cast(web.Request, request))
                except Exception:
                    log.exception("unhandled error answering %s %s", request.method, request.path)
                    response = web.Response(
                        status=500, body=errors.internal().body(), content_type="application/json"
                    )
                keep = self._answer(request, response)
                self.last_active = self.loop.time()
                if not keep or (self.closing and not self._pending):
                    break
                if not self._pending:
                    return
                request = self._pending.popleft()
                if not self._pending and self.transport is not None:
                    self.transport.resume_reading()
        except asyncio.CancelledError:  # shutdown's deadline passed
            self.close()
            raise
        finally:
            self.task = None
        if self._rejection and self.transport is not None and not self.transport.is_closing():
            self.transport.write(self._rejection)
        self.close()

    def _answer(self, request: LeanRequest, response: web.StreamResponse) -> bool:
        """Write ``response`` (unless it was streamed); whether the connection stays open."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        keep = request.keep_alive and not self.closing
        if isinstance(response, LeanStream):
            response.end_now()
            return keep and request.keep_alive  # HTTP/1.0 streams end with the connection
        body = response.body if isinstance(response, web.Response) else None
        if body is None:
            body = b""
        elif not isinstance(body, bytes | bytearray):
            raise TypeError(f"cannot send a body of type {type(body).__name__}")
        extra = f"Content-Length: {len(body)}\r\n"
        if not keep:
            extra += "Connection: close\r\n"
        elif request.version < HttpVersion11:
            extra += "Connection: keep-alive\r\n"
        head = _head(response.status, response.reason, response.headers, extra, request.version)
        if request.method == "HEAD":
            transport.write(head + _Date.header() + b"\r\n")
        else:
            transport.write(head + _Date.header() + b"\r\n" + body)
        return keep


class LeanServer(web.Server):
    """aiohttp's ``web.Server`` interface (for ``ServerRunner``/``TCPSite`` and graceful shutdown)
    with :class:`LeanConnection` as the protocol."""

    def __init__(
        self, handler: Handler, *, max_body_bytes: int, keepalive_timeout: float = KEEPALIVE_TIMEOUT
    ) -> None:
        super().__init__(handler, access_log=None)  # type: ignore[arg-type]
        self.loop = asyncio.get_running_loop()
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.keepalive_timeout = keepalive_timeout
        self.lean: set[LeanConnection] = set()

    def __call__(self) -> LeanConnection:  # type: ignore[override]
        return LeanConnection(self)

    def pre_shutdown(self) -> None:
        """No new requests: idle connections close now, busy ones after their answer."""
        for conn in list(self.lean):
            conn.closing = True
            if conn.task is None:
                conn.close()
        super().pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's signature
        """Give requests in hand ``timeout`` seconds to finish, then cancel them (a stream ends
        with its shutdown event) and close every connection."""
        tasks = {conn.task for conn in self.lean if conn.task is not None}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=timeout)
        for conn in list(self.lean):
            conn.close()
        await super().shutdown(timeout)
