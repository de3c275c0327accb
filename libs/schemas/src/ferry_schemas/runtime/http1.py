"""A minimal HTTP/1.1 keep-alive client for whole-body requests to one server (the API server).

One :class:`Pool` of at most ``limit`` connections, each an :class:`asyncio.Protocol` whose answers
httptools' C parser reads; a request is its bytes, written at once, and its answer the status,
reason and whole body. What aiohttp's ``ClientSession.request`` does per request that a request of
Ferry's to the API server never needs (a ``ClientRequest`` and ``ClientResponse``, cookie jar, URL
and header multidicts, trace hooks, a payload writer, a stream reader, timers) is not done:
``bench.reconcile.client`` measured the client's CPU per request. Streaming (watches) stays on
aiohttp.

Errors are the ones callers already handle from aiohttp: connection trouble is an
:class:`aiohttp.ClientConnectorError` (refused, unreachable; an :class:`OSError`), a TLS failure an
:class:`ssl.SSLError`, or an :class:`aiohttp.ServerDisconnectedError` (the server closed the connection
before answering; an idempotent request on a reused connection is sent once more on a new one, as
aiohttp does), a timeout :class:`TimeoutError`, an unparsable answer an
:class:`aiohttp.ClientPayloadError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from typing import NamedTuple, cast

import aiohttp
import httptools
from aiohttp.client_reqrep import ConnectionKey

KEEP_IDLE_SECONDS = 15.0
"""How long an idle connection is kept (aiohttp's ``keepalive_timeout``): a connection idle for
longer is closed rather than reused, so a server's or proxy's idle timeout seldom meets a request."""


class Answer(NamedTuple):
    status: int
    reason: str
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request's bytes, parses its answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reusable = True
        """False once the server said ``Connection: close``, the connection was lost or an answer
        was left unread: such a connection is closed instead of going back to the pool."""
        self.used = False
        """It answered a request before: the server may have closed it while it sat idle."""
        self.received = False
        """A byte of the current request's answer arrived."""
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._reason = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            if exc is None:
                answer.set_exception(aiohttp.ServerDisconnectedError())
            else:
                answer.set_exception(aiohttp.ClientOSError(*getattr(exc, "args", ())))

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reusable = False
            answer, self._answer = self._answer, None
            if answer is not None and not answer.done():
                answer.set_exception(aiohttp.ClientPayloadError(f"unparsable answer: {exc}"))
            assert self.transport is not None
            self.transport.abort()

    # httptools' callbacks
    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_body(self, chunk: bytes) -> None:
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        answer, self._answer = self._answer, None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        reason, self._reason, self._body = self._reason, b"", []
        if not self._parser.should_keep_alive():
            self.reusable = False
        if answer is None:  # nothing asked (a server's parting 408): never reuse it
            self.reusable = False
        elif not answer.done():
            answer.set_result(Answer(self._parser.get_status_code(), reason.decode("latin-1"), body))

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.received = False
        self._answer = answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return answer


class Pool:
    """At most ``limit`` keep-alive connections to ``host:port``, TLS when ``ssl_context`` is set."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None, *, limit: int) -> None:
        self._host, self._port, self._ssl, self._limit = host, port, ssl_context, limit
        self._idle: deque[_Connection] = deque()
        """Idle connections, the longest idle first."""
        self._closed = False
        self._open = 0
        """Connections that exist or are being opened (idle ones included)."""
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def fetch(self, request: bytes, *, seconds: float | None, idempotent: bool) -> Answer:
        """Send ``request`` (its head and body, bytes) and read its whole answer within ``seconds``."""
        async with asyncio.timeout(seconds):
            retry = idempotent
            while True:
                conn = await self._acquire()
                try:
                    answer = await conn.send(request)
                except aiohttp.ServerDisconnectedError:
                    self._release(conn)
                    if retry and conn.used and not conn.received:
                        retry = False  # a stale keep-alive connection: once more, on another one
                        continue
                    raise
                except BaseException:  # timeout, cancellation: its answer may still come, never reuse it
                    conn.reusable = False
                    self._release(conn)
                    raise
                conn.used = True
                self._release(conn)
                return answer

    async def _acquire(self) -> _Connection:
        while True:
            if self._idle:
                oldest = asyncio.get_running_loop().time() - KEEP_IDLE_SECONDS
                while self._idle:
                    conn = self._idle.pop()  # the most recently used: the likeliest to be open still
                    assert conn.transport is not None
                    if conn.reusable and not conn.transport.is_closing() and conn.idle_since >= oldest:
                        return conn
                    self._drop(conn)
            if self._open < self._limit:
                break
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._wake()  # handed a turn at the moment of cancellation: pass it on
                else:
                    with contextlib.suppress(ValueError):  # a cancelled turn _wake skipped is gone
                        self._waiting.remove(turn)
                raise
        self._open += 1
        server_hostname = self._host.strip("[]") if self._ssl is not None else None
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                _Connection, self._host, self._port, ssl=self._ssl, server_hostname=server_hostname
            )
        except BaseException as exc:
            self._open -= 1
            self._wake()
            if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
                # as aiohttp raises it: the same error (and retry label, log line) on either path
                key = ConnectionKey(self._host, self._port, self._ssl is not None, self._ssl or True,
                                    None, None, None, server_hostname)  # fmt: skip
                raise aiohttp.ClientConnectorError(key, exc) from exc
            raise
        return conn

    def _release(self, conn: _Connection) -> None:
        assert conn.transport is not None
        if conn.reusable and not self._closed and not conn.transport.is_closing():
            conn.idle_since = now = asyncio.get_running_loop().time()
            self._idle.append(conn)
            while now - self._idle[0].idle_since > KEEP_IDLE_SECONDS:
                self._drop(self._idle.popleft())
        else:
            self._drop(conn)
        self._wake()

    def _drop(self, conn: _Connection) -> None:
        self._open -= 1
        assert conn.transport is not None
        conn.transport.abort()

    def _wake(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    def close(self) -> None:
        """Close the idle connections (a request still running closes its own when it ends)."""
        self._closed = True
        while self._idle:
            self._drop(self._idle.pop())
