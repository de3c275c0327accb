"""A durable JetStream pull consumer shared by every replica of the service.

Each message is handled inside a CONSUMER span that continues the producer's trace; it is acked
after the handler finished, nacked with a growing delay when the handler failed, and after
``max_deliver`` attempts the :class:`DeadLetterForwarder` moves it to the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ferry_schemas.runtime.jetstream import DeadLetterForwarder, record_pending
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from ferry_status.metrics import FAILURES, HANDLE_LATENCY, HANDLED

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ferry_status")

Handler = Callable[[Msg, Context], Awaitable[None]]


class PullConsumer:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        *,
        service: str,
        stream: str,
        durable: str,
        subject: str,
        handler: Handler,
        max_deliver: int,
        ack_wait: float,
        batch: int = 32,
    ) -> None:
        self._nc = nc
        self._js = js
        self.service = service
        self.stream = stream
        self.durable = durable
        self.subject = subject
        self._handler = handler
        self._config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=subject,
            max_deliver=max_deliver,
            ack_wait=ack_wait,
            max_ack_pending=1000,
        )
        self._batch = batch
        self._dead_letters = DeadLetterForwarder(nc, js, service, stream, durable)
        self.bound = asyncio.Event()

    async def run(self) -> None:
        await self._dead_letters.start()
        try:
            while True:
                try:
                    await self._consume()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.bound.clear()
                    log.warning("%s: consumer failed (%s); binding again", self.durable, exc)
                    await asyncio.sleep(1.0)
        finally:
            await self._dead_letters.stop()

    async def _consume(self) -> None:
        # add_consumer creates or updates the durable (pull_subscribe never updates an existing one)
        await self._js.add_consumer(self.stream, config=self._config)
        psub = await self._js.pull_subscribe_bind(self.durable, stream=self.stream)
        self.bound.set()
        log.info("%s: consuming %s from %s", self.durable, self.subject, self.stream)
        failures = 0
        try:
            while True:
                try:
                    msgs = await psub.fetch(self._batch, timeout=5.0)
                except TimeoutError:
                    continue
                except NatsError as exc:
                    failures += 1
                    if failures > 5:
                        raise
                    log.info("%s: fetch failed (%s)", self.durable, exc)
                    await asyncio.sleep(min(5.0, 0.5 * failures))
                    continue
                failures = 0
                await asyncio.gather(*(self._handle(m) for m in msgs))
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        started = time.monotonic()
        record_pending(self.durable, msg)
        parent = propagate.extract(dict(msg.headers or {}))
        with tracer.start_as_current_span(
            f"{self.service} process {msg.subject}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": self.durable,
            },
        ) as span:
            try:
                await self._handler(msg, otel_context.get_current())
            except Exception as exc:
                FAILURES.labels(self.durable).inc()
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                attempt = msg.metadata.num_delivered or 1
                log.warning("%s: %s failed (attempt %d): %s", self.durable, msg.subject, attempt, exc)
                await _settle(msg.nak(delay=min(30.0, 0.5 * 2 ** (attempt - 1))))
                return
            HANDLED.labels(self.durable).inc()
            HANDLE_LATENCY.labels(self.durable).observe(time.monotonic() - started)
            await _settle(msg.ack())


async def _settle(action: Awaitable[None]) -> None:
    try:
        await action
    except Exception as exc:  # the connection dropped; the message will be redelivered
        log.info("could not settle a message: %s", exc)
