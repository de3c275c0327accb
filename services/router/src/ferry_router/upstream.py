"""A lean HTTP/1.1 client for the router's upstream calls, on asyncio protocols.

The router sends one kind of request (a POST with a JSON body to an engine it knows) and relays the
answer; a general client's per-call machinery (request/response objects with tracing hooks,
cookie jars, redirects, URL objects, timers per read) was a quarter of its CPU. Here a call is: take
an idle keep-alive connection (or dial one), write the head and body in one ``write``, wait for the
response head, then hand body pieces to the reader as they arrive (``Content-Length``, chunked, or
until close). Limits: a connect timeout, the caller's bound on the wait for the head, a bounded
pool (total and per host; a caller waits for a free connection), idle keep-alive connections
dropped after ``keepalive`` seconds, and reading paused while a slow reader has more than
``HIGH_WATER`` bytes unread. A reused connection that the server had closed is retried once on a
fresh one (nothing can have reached the engine).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import cast

from multidict import CIMultiDict

HIGH_WATER = 1 << 20
MAX_HEAD = 64 * 1024
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class UpstreamConnectionError(ConnectionError):
    """The connection failed or closed before the answer was complete."""


class ResponseHead:
    __slots__ = ("content_type", "headers", "keep_alive", "status")

    def __init__(self, status: int, headers: CIMultiDict[str], keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        self.keep_alive = keep_alive
        raw = headers.get("Content-Type", "")
        self.content_type = raw.split(";", 1)[0].strip().lower()


def parse_head(raw: bytes) -> tuple[ResponseHead, int | None, bool]:
    """Status, headers, keep-alive; and the body framing: Content-Length (None if absent), chunked."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise UpstreamConnectionError(f"not an HTTP/1.x response: {lines[0][:60]!r}")
    status = int(rest[:3])
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.add(name.strip(), value.strip())
    connection = headers.get("Connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
    length_raw = headers.get("Content-Length")
    length = None if chunked or length_raw is None else int(length_raw)
    if status in (204, 304) or 100 <= status < 200:
        length = 0
    return ResponseHead(status, headers, keep_alive), length, chunked


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, pool: Pool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._state = _DONE
        self._remaining = 0
        self._head: asyncio.Future[ResponseHead] | None = None
        self._pieces: collections.deque[bytes] = collections.deque()
        self._unread = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False
        self._keep_alive = False

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == _UNTIL_CLOSE:
            self._finish()
        elif self._state != _DONE or (self._head is not None and not self._head.done()):
            self._fail(UpstreamConnectionError(f"connection closed by the engine ({exc or 'EOF'})"))
        self.pool.forget(self)

    def data_received(self, data: bytes) -> None:
        if self._state == _HEAD:
            self._buffer += data
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    self._fail(UpstreamConnectionError("response head too large"))
                    self.close()
                return
            try:
                head, length, chunked = parse_head(bytes(self._buffer[:end]))
            except (ValueError, UpstreamConnectionError) as exc:
                self._fail(UpstreamConnectionError(f"bad response head: {exc}"))
                self.close()
                return
            data = bytes(self._buffer[end + 4 :])
            self._buffer.clear()
            self._keep_alive = head.keep_alive
            if chunked:
                self._state = _CHUNK_SIZE
            elif length is not None:
                self._state, self._remaining = _LENGTH, length
            else:
                self._state, self._keep_alive = _UNTIL_CLOSE, False
            if self._head is not None and not self._head.done():
                self._head.set_result(head)
            if self._state == _LENGTH and self._remaining == 0:
                self._finish()
                return
        if data:
            self._body(data)

    def _body(self, data: bytes) -> None:
        state = self._state
        if state == _LENGTH:
            if len(data) >= self._remaining:
                self._push(data[: self._remaining])
                self._finish()
            else:
                self._remaining -= len(data)
                self._push(data)
            return
        if state == _UNTIL_CLOSE:
            self._push(data)
            return
        if state == _DONE:
            return  # bytes after a complete answer: the connection is not reused
        self._chunked(data)

    def _chunked(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while start < len(buffer):
            state = self._state
            if state == _CHUNK_DATA:
                take = min(self._remaining, len(buffer) - start)
                self._push(bytes(buffer[start : start + take]))
                start += take
                self._remaining -= take
                if self._remaining:
                    break
                self._state = _CHUNK_END
                continue
            end = buffer.find(b"\r\n", start)
            if end < 0:
                break
            line = bytes(buffer[start:end])
            start = end + 2
            if state == _CHUNK_END:
                self._state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                try:
                    size = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    self._fail(UpstreamConnectionError(f"bad chunk size {line[:20]!r}"))
                    self.close()
                    return
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._state, self._remaining = _CHUNK_DATA, size
            elif state == _TRAILER and not line:
                del buffer[:start]
                self._finish()
                return
        del buffer[:start]

    def pause_writing(self) -> None:  # the engine reads our request slower than we write: fine
        pass

    def resume_writing(self) -> None:
        pass

    # ---------------------------------------------------------------- reader side

    def _push(self, piece: bytes) -> None:
        if not piece:
            return
        self._pieces.append(piece)
        self._unread += len(piece)
        if self._unread > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._state = _DONE
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._state = _DONE
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_piece(self) -> bytes | None:
        """The next body bytes; None at the end of the body."""
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self._state == _DONE:
                return None
            self._waiter = self.pool.loop.create_future()
            await self._waiter
            self._waiter = None
        piece = self._pieces.popleft()
        self._unread -= len(piece)
        if self._paused and self._unread < HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return piece

    # ---------------------------------------------------------------- request side

    def request(self, head: bytes, body: bytes) -> asyncio.Future[ResponseHead]:
        assert self.transport is not None
        self._head = self.pool.loop.create_future()
        self._state = _HEAD
        self._pieces.clear()
        self._unread = 0
        self._error = None
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return self._head

    @property
    def reusable(self) -> bool:
        return not self.closed and self._state == _DONE and self._error is None and self._keep_alive

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class UpstreamResponse:
    """An answer whose head arrived; the body is read with :meth:`read` or ``content.iter_any()``."""

    __slots__ = ("_conn", "_released", "content_type", "headers", "status")

    def __init__(self, conn: Connection, head: ResponseHead) -> None:
        self._conn = conn
        self.status = head.status
        self.headers = head.headers
        self.content_type = head.content_type
        self._released = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._conn.pool.loop

    @property
    def complete(self) -> bool:
        """The whole body is already here (no read can wait)."""
        conn = self._conn
        return conn._state == _DONE and conn._error is None

    @property
    def content(self) -> UpstreamResponse:
        return self  # so relays written for aiohttp read ``response.content.iter_any()``

    async def iter_any(self) -> AsyncIterator[bytes]:
        while (piece := await self._conn.next_piece()) is not None:
            yield piece

    async def read(self) -> bytes:
        """The whole body (no async generator: a small answer is usually one piece)."""
        conn = self._conn
        first = await conn.next_piece()
        if first is None:
            return b""
        rest: list[bytes] = []
        while (piece := await conn.next_piece()) is not None:
            rest.append(piece)
        return b"".join((first, *rest)) if rest else first

    def release(self) -> None:
        """Back to the pool when the answer was read to its end, otherwise closed."""
        if not self._released:
            self._released = True
            self._conn._head = None  # an idle connection keeps no answer's head (pool of hundreds)
            self._conn.pool.put_back(self._conn)

    def close(self) -> None:
        self._conn.close()
        self.release()


class Pool:
    """Keep-alive connections per (scheme, host, port), bounded in total and per host."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        max_connections: int,
        max_per_host: int,
        keepalive: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self._ssl = ssl_context
        self.loop = asyncio.get_running_loop()
        """The loop the pool serves (kept: before Python 3.12 each ``get_running_loop`` is a
        ``getpid`` system call, and the request path asked for it about six times)."""
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._total = asyncio.Semaphore(max_connections) if max_connections > 0 else None
        self._max_per_host = max_per_host
        self._per_host: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._leased: set[Connection] = set()
        self.in_use = 0

    def idle_count(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    async def _acquire_slot(self, key: tuple[str, str, int], deadline: float) -> None:
        if self._max_per_host > 0:
            gate = self._per_host.get(key)
            if gate is None:
                gate = self._per_host[key] = asyncio.Semaphore(self._max_per_host)
            await _acquire(gate, deadline)
        if self._total is not None:
            try:
                await _acquire(self._total, deadline)
            except BaseException:
                if self._max_per_host > 0:
                    self._per_host[key].release()
                raise
        self.in_use += 1

    def _release_slot(self, key: tuple[str, str, int]) -> None:
        self.in_use -= 1
        if self._total is not None:
            self._total.release()
        if self._max_per_host > 0:
            self._per_host[key].release()

    async def lease(self, key: tuple[str, str, int], deadline: float) -> Connection:
        """An idle connection to ``key`` or a new one (waits while the pool is full, until the
        loop time ``deadline``)."""
        await self._acquire_slot(key, deadline)
        try:
            idle = self._idle.get(key)
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self.keepalive:
                    conn.reused = True
                    self._leased.add(conn)
                    return conn
                conn.close()
            conn = await self._dial(key, deadline)
            self._leased.add(conn)
            return conn
        except BaseException:
            self._release_slot(key)
            raise

    async def _dial(self, key: tuple[str, str, int], deadline: float) -> Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if scheme == "https":
            context = self._ssl or ssl.create_default_context()
        async with asyncio.timeout_at(min(deadline, loop.time() + self.connect_timeout)):
            _, protocol = await loop.create_connection(lambda: Connection(self, key), host, port, ssl=context)
        return protocol

    def put_back(self, conn: Connection) -> None:
        if conn not in self._leased:
            return
        self._leased.discard(conn)
        self._release_slot(conn.key)
        if conn.reusable:
            conn.idle_since = self.loop.time()
            self._idle.setdefault(conn.key, []).append(conn)
        else:
            conn.close()

    def forget(self, conn: Connection) -> None:
        """A connection closed: drop it from the idle lists (a leased one is released by its user)."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        for conn in list(self._leased):
            conn.close()


def request_head(method: str, host: str, path: str, headers: Mapping[str, str], length: int) -> bytes:
    parts = [f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"]
    for name, value in headers.items():
        parts.append(f"{name}: {value}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def split_url(url: str) -> tuple[tuple[str, str, int], str, str]:
    """(scheme, host, port), the Host header value and the path with query of an absolute URL."""
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if authority.startswith("["):
        host, _, port_part = authority[1:].partition("]")
        port_text = port_part.removeprefix(":")
    else:
        host, _, port_text = authority.partition(":")
    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    return (scheme, host, port), authority, slash + path if slash else "/"


async def send_request(
    pool: Pool, method: str, url: str, body: bytes, headers: Mapping[str, str], limit: float
) -> UpstreamResponse:
    """Send and wait (``limit`` seconds, pool wait included) for the response head.

    The bound is one timer on the head's future (an ``asyncio.timeout`` per request cost about
    4 % of the router's CPU); waits for a pool slot or a new connection, the rare cases, use
    ``asyncio.timeout_at`` on the same deadline."""
    key, authority, path = split_url(url)
    head = request_head(method, authority, path, headers, len(body))
    loop = pool.loop
    deadline = loop.time() + limit
    for attempt in (0, 1):
        conn = await pool.lease(key, deadline)
        waiter = conn.request(head, body)
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            got = await waiter
        except UpstreamConnectionError:
            reused = conn.reused
            conn.close()
            pool.put_back(conn)
            if reused and attempt == 0:
                continue  # the engine had closed the idle connection; nothing reached it
            raise
        except BaseException:
            conn.close()
            pool.put_back(conn)
            raise
        finally:
            timer.cancel()
        return UpstreamResponse(conn, got)
    raise AssertionError("unreachable")  # pragma: no cover


def _expire(waiter: asyncio.Future[ResponseHead]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def _acquire(gate: asyncio.Semaphore, deadline: float) -> None:
    """Take a permit, waiting at most until ``deadline`` (no timer when one is free)."""
    if not gate.locked():
        await gate.acquire()
        return
    async with asyncio.timeout_at(deadline):
        await gate.acquire()
