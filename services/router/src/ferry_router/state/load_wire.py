"""The load reader's NATS client: one JetStream push consumer, its messages parsed straight off the
socket buffer.

nats-py spent about two thirds of the load reader's CPU on its own per-message work (a ``Msg``
object, header parsing, a queue and a callback task per message): at 20,000 engines pushing once a
second that was 10-12 % of a core per router process. This client does the one thing the reader
needs -- every message of ``FERRY_LOAD`` (the last per pod, then changes) handed to a function as
``bytes`` -- in a :class:`asyncio.Protocol` that cuts ``MSG`` frames out of each chunk the socket
delivers, without an object or a task per message.

What it keeps of a NATS client: the servers, user, inbox prefix (``_INBOX_<user>``, which the
router's NATS permissions allow) and TLS of every Ferry service
(:func:`ferry_schemas.runtime.nats_connect.nats_options`; a ``tls://`` URL or a server that
requires TLS gets the default context when ``FERRY_NATS_CA`` names none), PING/PONG both ways (a
connection whose server stops answering is dropped), flow control and idle heartbeats of the
consumer (a consumer the server lost -- the stream was recreated -- is created again), and
reconnects: when the connection ends (a restarted server), it connects again, every 0.5 s, to the
next server of the list and creates a new consumer, which starts with the last message per pod again.
A gap in the consumer's sequence (messages dropped for a slow reader) is not repaired: every pod
pushes again within its heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import orjson
from ferry_schemas.runtime.nats_connect import nats_options

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 20.0  # the consumer create request: a busy server (or a starved reader) may take long
RECONNECT_WAIT = 0.5
PING_INTERVAL = 10.0
MAX_OUTSTANDING_PINGS = 2
IDLE_HEARTBEAT = 5.0  # the consumer's: the server sends one when it has nothing else to send
CONSUMER_LOST_AFTER = 3 * IDLE_HEARTBEAT  # nothing at all on the deliver subject: create it again
INACTIVE_THRESHOLD = 30.0  # the server deletes a consumer whose deliver subject lost interest

DELIVER_SID = b"1"
REPLY_SID = b"2"


class WireError(Exception):
    """The server refused something (``-ERR``, a JetStream API error)."""


class Server:
    """One ``nats://`` / ``tls://`` URL of the list, with the credentials it carries."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 4222
        self.tls = parts.scheme == "tls"
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password is not None else None


def credentials(server: Server, options: dict[str, Any]) -> dict[str, str]:
    """The CONNECT fields that say who we are, as nats-py sends them: the user of
    :func:`nats_options` (``FERRY_NATS_USER``), else the URL's (a user without a password is a
    token)."""
    if "user" in options:
        return {"user": options["user"], "pass": options["password"]}
    if server.user and server.password is not None:
        return {"user": server.user, "pass": server.password}
    if server.user:
        return {"auth_token": server.user}
    return {}


class Wire(asyncio.Protocol):
    """One connection: cuts frames out of the byte stream; ``on_message(payload)`` for each message
    of the deliver subscription, the rest (replies, heartbeats, PING) handled here."""

    def __init__(self, on_message: Callable[[bytes], None]) -> None:
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.info: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.pong: asyncio.Future[None] | None = None
        self.reply: asyncio.Future[bytes] | None = None
        self.outstanding_pings = 0
        self.delivered_at = time.monotonic()  # anything on the deliver subject, heartbeats too
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.info, self.pong, self.reply):
            if future is not None and not future.done():
                future.set_exception(exc or ConnectionResetError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        size = len(buffer)
        pos = 0
        on_message = self.on_message
        while pos < size:
            eol = buffer.find(b"\r\n", pos)
            if eol < 0:
                break
            if buffer.startswith(b"MSG ", pos):
                # MSG <subject> <sid> [reply] <bytes>
                head = buffer[pos + 4 : eol].split()
                start = eol + 2
                end = start + int(head[-1])
                if end + 2 > size:
                    break
                if head[1] == DELIVER_SID:
                    self.delivered_at = time.monotonic()
                    on_message(buffer[start:end])
                elif head[1] == REPLY_SID:
                    self._replied(buffer[start:end])
                pos = end + 2
            elif buffer.startswith(b"HMSG ", pos):
                # HMSG <subject> <sid> [reply] <header bytes> <total bytes>; no reply is an empty
                # field (two spaces) from nats-server 2.9's idle heartbeats: split on runs of spaces
                head = buffer[pos + 5 : eol].split()
                start = eol + 2
                end = start + int(head[-1])
                if end + 2 > size:
                    break
                self._headed(head, buffer[start : start + int(head[-2])], buffer[start + int(head[-2]) : end])
                pos = end + 2
            else:
                self._control(buffer[pos:eol])
                pos = eol + 2
        self._buffer = buffer[pos:]

    def _headed(self, head: list[bytes], headers: bytes, payload: bytes) -> None:
        status = headers.split(b"\r\n", 1)[0][9:12]  # "NATS/1.0 100 Idle Heartbeat"
        if head[1] == REPLY_SID:
            self._replied(payload, status)
        elif head[1] != DELIVER_SID:
            return
        elif status == b"100":  # idle heartbeat or flow control: the consumer is alive
            self.delivered_at = time.monotonic()
            if len(head) == 5:  # a reply subject: a flow control request wants an empty answer
                self.write(b"PUB " + head[2] + b" 0\r\n\r\n")
            for line in headers.split(b"\r\n"):
                if line.lower().startswith(b"nats-consumer-stalled:"):
                    self.write(b"PUB " + line.split(b":", 1)[1].strip() + b" 0\r\n\r\n")
        elif not status:
            self.delivered_at = time.monotonic()
            self.on_message(payload)

    def _replied(self, payload: bytes, status: bytes = b"") -> None:
        if self.reply is not None and not self.reply.done():
            if status and status != b"200":
                self.reply.set_exception(WireError(f"no JetStream answer (status {status.decode()})"))
            else:
                self.reply.set_result(payload)

    def _control(self, line: bytes) -> None:
        if line == b"PING":
            self.write(b"PONG\r\n")
        elif line == b"PONG":
            self.outstanding_pings = 0
            if self.pong is not None and not self.pong.done():
                self.pong.set_result(None)
        elif line.startswith(b"INFO "):
            if not self.info.done():
                self.info.set_result(orjson.loads(line[5:]))
        elif line.startswith(b"-ERR"):
            error = WireError(line[5:].decode(errors="replace").strip("' "))
            log.warning("load reader: NATS says %s", error)
            for future in (self.info, self.pong, self.reply):
                if future is not None and not future.done():
                    future.set_exception(error)
        # +OK and anything else: nothing to do (verbose is off)


class LoadSubscription:
    """Every message of ``stream`` on ``subjects`` (the last per subject first) to ``on_message``,
    across reconnects, until cancelled."""

    def __init__(
        self, url: str, stream: str, subjects: str, on_message: Callable[[bytes], None], name: str
    ) -> None:
        self.options = nats_options(url)  # servers, user, inbox prefix and TLS as every service's
        self.servers = [Server(u) for u in self.options["servers"]]
        self.stream, self.subjects, self.name = stream, subjects, name
        self.on_message = on_message
        self.inbox = self.options.get("inbox_prefix", "_INBOX")
        self.tls: ssl.SSLContext | None = self.options.get("tls")
        self.sessions = 0  # connections that got a consumer (1 + reconnects)

    async def run(self) -> None:
        attempt, failing = 0, False  # failing: quiet about the same outage after its first warning
        while True:
            server, sessions = self.servers[attempt % len(self.servers)], self.sessions
            attempt += 1
            try:
                await self._session(server)
                failing = False
                log.info("load reader: NATS %s:%s closed the connection", server.host, server.port)
            except (OSError, TimeoutError, WireError, ssl.SSLError) as exc:
                quiet = failing and self.sessions == sessions
                (log.debug if quiet else log.warning)(
                    "load reader: NATS %s:%s: %r, connecting again", server.host, server.port, exc
                )
                failing = True
            await asyncio.sleep(RECONNECT_WAIT)

    async def _session(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        transport, wire = await asyncio.wait_for(
            loop.create_connection(lambda: Wire(self.on_message), server.host, server.port), CONNECT_TIMEOUT
        )
        try:
            await self._handshake(server, transport, wire)
            while not await self._subscribe(wire):  # the stream is not declared yet
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(wire.closed), 1.0)
                if wire.closed.done():
                    return
            self.sessions += 1
            await self._keep_alive(wire)
        finally:
            if wire.transport is not None:
                wire.transport.abort()

    async def _handshake(self, server: Server, transport: asyncio.Transport, wire: Wire) -> None:
        info = await asyncio.wait_for(wire.info, CONNECT_TIMEOUT)
        tls = self.tls or (ssl.create_default_context() if server.tls or info.get("tls_required") else None)
        if tls is not None:
            loop = asyncio.get_running_loop()
            upgraded = await asyncio.wait_for(
                loop.start_tls(transport, wire, tls, server_hostname=server.host), CONNECT_TIMEOUT
            )
            wire.transport = cast(asyncio.Transport, upgraded)
        connect = {
            "verbose": False, "pedantic": False, "tls_required": tls is not None, "name": self.name,
            "lang": "python3", "version": "ferry-load-wire", "protocol": 1, "headers": True,
            "no_responders": True, "echo": False, **credentials(server, self.options),
        }  # fmt: skip
        wire.pong = asyncio.get_running_loop().create_future()
        wire.write(b"CONNECT " + orjson.dumps(connect) + b"\r\nPING\r\n")
        await asyncio.wait_for(wire.pong, CONNECT_TIMEOUT)  # an -ERR (authorization) raises here

    async def _subscribe(self, wire: Wire, *, again: bool = False) -> bool:
        """A new push consumer on a new deliver subject; False when the stream is not there."""
        token = secrets.token_hex(8)
        deliver, reply = f"{self.inbox}.{token}.d", f"{self.inbox}.{token}.r"
        config = {
            "stream_name": self.stream,
            "config": {
                "deliver_subject": deliver, "deliver_policy": "last_per_subject", "ack_policy": "none",
                "replay_policy": "instant", "filter_subject": self.subjects, "flow_control": True,
                "idle_heartbeat": int(IDLE_HEARTBEAT * 1e9),
                "inactive_threshold": int(INACTIVE_THRESHOLD * 1e9),
                "mem_storage": True, "num_replicas": 1, "max_deliver": 1,
            },
        }  # fmt: skip
        request = orjson.dumps(config)
        wire.reply = asyncio.get_running_loop().create_future()
        if again:  # the lost consumer's deliver subject: no longer read
            wire.write(b"UNSUB " + DELIVER_SID + b"\r\n")
        wire.write(
            f"SUB {deliver} ".encode() + DELIVER_SID + b"\r\n"
            + f"SUB {reply} ".encode() + REPLY_SID + b"\r\n"
            + f"PUB $JS.API.CONSUMER.CREATE.{self.stream} {reply} {len(request)}\r\n".encode()
            + request + b"\r\n"
        )  # fmt: skip
        try:
            answer = orjson.loads(await asyncio.wait_for(wire.reply, REQUEST_TIMEOUT))
        finally:
            wire.write(b"UNSUB " + REPLY_SID + b"\r\n")
        if error := answer.get("error"):
            log.warning("load reader: no consumer on %s: %s", self.stream, error.get("description", error))
            return False
        wire.delivered_at = time.monotonic()
        return True

    async def _keep_alive(self, wire: Wire) -> None:
        """PING the server and watch the consumer until the connection ends."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(wire.closed), PING_INTERVAL)
            if wire.closed.done():
                return
            if wire.outstanding_pings >= MAX_OUTSTANDING_PINGS:
                raise TimeoutError("the server stopped answering PING")
            wire.outstanding_pings += 1
            wire.write(b"PING\r\n")
            if time.monotonic() - wire.delivered_at > CONSUMER_LOST_AFTER:
                log.warning("load reader: nothing from the consumer on %s: creating it again", self.stream)
                await self._subscribe(wire, again=True)
