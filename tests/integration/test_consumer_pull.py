"""The durable consumer's pull loop on a real nats-server: requests ahead of need, every message
handled, failures redelivered, and a deleted consumer or a restarted server noticed."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import nats
import pytest
from ferry_local.natsd import NatsServer
from ferry_schemas.runtime.consumer import DurableConsumer
from ferry_schemas.runtime.jetstream import connect
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig
from opentelemetry.context import Context

pytestmark = pytest.mark.integration


class Handled:
    """What the handler saw, by payload; the first delivery of each ``fail_once`` payload fails."""

    def __init__(self, fail_once: set[bytes] = frozenset()) -> None:  # type: ignore[assignment]
        self.seen: dict[bytes, int] = {}
        self._fail_once = set(fail_once)
        self.changed = asyncio.Event()

    async def __call__(self, msg: Msg, context: Context) -> None:
        self.seen[msg.data] = self.seen.get(msg.data, 0) + 1
        self.changed.set()
        if msg.data in self._fail_once:
            self._fail_once.discard(msg.data)
            raise RuntimeError("transient")

    async def until(self, done: Callable[[dict[bytes, int]], bool]) -> None:
        """Wait (20 s at most) until ``done(seen)``."""
        async with asyncio.timeout(20.0):
            while not done(self.seen):
                self.changed.clear()
                await self.changed.wait()

    async def saw(self, *payloads: bytes) -> None:
        await self.until(lambda seen: set(payloads) <= set(seen))


def _consumer(nc: Client, stream: str, handler: Handled, *, expires: float = 5.0) -> DurableConsumer:
    return DurableConsumer(
        nc,
        nc.jetstream(),
        service="test",
        stream=stream,
        durable="work",
        subject=f"{stream.lower()}.>",
        handler=handler,
        max_deliver=5,
        ack_wait=5.0,
        batch=16,
        pull_expires=expires,
    )


async def test_messages_come_on_few_requests_and_failures_are_redelivered(own_nats: NatsServer) -> None:
    nc = await connect(own_nats.url, "consumer-pull-test")
    spy = await nats.connect(own_nats.url)
    stream = f"PULL_{uuid.uuid4().hex[:8].upper()}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"]))
    requests = 0

    async def count(_: Msg) -> None:
        nonlocal requests
        requests += 1

    await spy.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.work", cb=count)
    await spy.flush()
    payloads = {f"m{i}".encode() for i in range(200)}
    handler = Handled(fail_once={b"m7", b"m150"})
    consumer = _consumer(nc, stream, handler)
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.bound.wait(), 10)
        for i in range(200):
            await js.publish(f"{stream.lower()}.s{i}", f"m{i}".encode())
        await handler.saw(*payloads)
        # nak'd with a delay, then delivered again
        await handler.until(lambda seen: seen[b"m7"] >= 2 and seen[b"m150"] >= 2)
        assert handler.seen[b"m7"] == handler.seen[b"m150"] == 2
        assert all(handler.seen[p] == 1 for p in payloads - {b"m7", b"m150"})
        # a request per half batch (8 messages) at most, not one or two per message as fetch sent
        assert requests <= 200 // 8 + 6, requests
        for _ in range(200):  # every message acked within 10 s (the last ack follows its handler)
            info = await js.consumer_info(stream, "work")
            if not info.num_ack_pending:
                break
            await asyncio.sleep(0.05)
        assert info.num_ack_pending == 0
        assert info.num_pending == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await spy.close()
        await nc.close()


async def test_a_deleted_consumer_and_a_restarted_server_are_noticed(own_nats: NatsServer) -> None:
    nc = await connect(own_nats.url, "consumer-pull-test")
    stream = f"PULL_{uuid.uuid4().hex[:8].upper()}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"]))
    handler = Handled()
    consumer = _consumer(nc, stream, handler, expires=0.5)
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.bound.wait(), 10)
        await js.publish(f"{stream.lower()}.a", b"before")
        await handler.saw(b"before")
        await js.delete_consumer(stream, "work")  # the server stays silent: the loop notices and binds again
        await js.publish(f"{stream.lower()}.b", b"after delete")
        await handler.saw(b"after delete")
        await asyncio.to_thread(own_nats.restart)  # open requests are forgotten; the durable is kept
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30.0
        while True:
            try:
                await js.publish(f"{stream.lower()}.c", b"after restart")
                break
            except Exception:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        await handler.saw(b"after restart")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()
