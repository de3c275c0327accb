"""The one consumer runtime of the control services: a durable pull consumer feeding handlers.

A :class:`DurableConsumer` is shared by every replica of a service (JetStream spreads the messages).
It binds (creating or updating the durable), fetches, and runs the handler of each message as its
own task inside a CONSUMER span that continues the producer's trace (W3C ``traceparent`` header).
While the handler runs the message is kept *in progress* (``+WPI`` every ``ack_wait / 3``), so a
reconcile that waits out an API-server outage is neither redelivered nor dead-lettered; it is
acked when the handler returns. Outcomes:

* the handler returns → ack;
* it raises :class:`BadMessage` (undecodable, can never work) → a :class:`~ferry_schemas.bus.DeadLetter`
  with the error on ``ferry.dlq.…`` and ``term`` (no retry);
* it raises anything else → nak with a capped exponential delay (services that reconcile through
  a :class:`~ferry_schemas.runtime.workqueue.WorkQueue` never get here: the queue retries forever);
* the process dies → JetStream redelivers after ``ack_wait``; after ``max_deliver`` deliveries the
  :class:`~ferry_schemas.runtime.jetstream.DeadLetterForwarder` moves it to the dead-letter stream
  (``ferry dead-letters redrive`` / ``python -m ferry_schemas.runtime.redrive`` puts it back).

:func:`keyed` turns "which keys does this message touch" into a handler that submits them to a
work queue and returns when each was reconciled — the usual wiring (bus → keys → queue).

Why not FastStream: its subscriber acks per message and cannot keep a message in progress while
a keyed queue coalesces it with others; the converter's needs (decode, publish) are a few lines
here, and one mechanism serves all three control services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram

from ferry_schemas.bus import DEAD_LETTER_STREAM, MSG_ID_HEADER, DeadLetter, dead_letter_subject
from ferry_schemas.runtime.jetstream import DEAD_LETTERS, DeadLetterForwarder, record_pending
from ferry_schemas.runtime.settings import MAX_ACK_PENDING
from ferry_schemas.runtime.workqueue import Backoff, WorkQueue

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ferry_schemas.runtime.consumer")

K = TypeVar("K", bound=Hashable)
Handler = Callable[[Msg, Context], Awaitable[None]]

MESSAGES = Counter("ferry_consumer_messages_total", "Messages handled, by outcome.", ["consumer", "outcome"])
HANDLE_SECONDS = Histogram("ferry_consumer_handle_seconds", "From fetch to ack.", ["consumer"])


class BadMessage(Exception):
    """The message can never be handled (not decodable): dead-lettered at once, never retried."""


class DurableConsumer:
    """See the module docstring."""

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
        max_ack_pending: int = MAX_ACK_PENDING,
        backoff: Backoff | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self.service = service
        self.stream = stream
        self.durable = durable
        self.subject = subject
        self._handler = handler
        self._ack_wait = ack_wait
        self._config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=subject,
            max_deliver=max_deliver,
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
        )
        self._batch = batch
        self._slots = asyncio.Semaphore(max_ack_pending)
        self._backoff = backoff or Backoff(jitter=0.0)
        self._dead_letters = DeadLetterForwarder(nc, js, service, stream, durable)
        self._tasks: set[asyncio.Task[None]] = set()
        self.bound = asyncio.Event()

    async def run(self) -> None:
        """Consume until cancelled, binding again after any failure."""
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
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
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
                for msg in msgs:
                    await self._slots.acquire()
                    task = asyncio.create_task(self._handle(msg))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        started = time.monotonic()
        record_pending(self.durable, msg)
        parent = propagate.extract(dict(msg.headers or {}))
        heartbeat = InProgress(msg, max(0.5, self._ack_wait / 3))
        try:
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
                except BadMessage as exc:
                    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                    heartbeat.cancel()
                    await self._reject(msg, str(exc))
                    return
                except Exception as exc:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                    attempt = _deliveries(msg)
                    delay = self._backoff.delay(attempt)
                    MESSAGES.labels(self.durable, "retried").inc()
                    log.warning(
                        "%s: %s failed (delivery %d), redelivery in %.1fs: %s",
                        self.durable,
                        msg.subject,
                        attempt,
                        delay,
                        exc,
                    )
                    heartbeat.cancel()
                    await _settle(msg.nak(delay=delay))
                    return
            heartbeat.cancel()
            MESSAGES.labels(self.durable, "acked").inc()
            HANDLE_SECONDS.labels(self.durable).observe(time.monotonic() - started)
            await _settle(msg.ack())
        finally:
            heartbeat.cancel()
            self._slots.release()

    async def _reject(self, msg: Msg, error: str) -> None:
        """Bad input: a clear error, a dead letter with the message, and no retry."""
        log.error("%s: %s rejected: %s", self.durable, msg.subject, error)
        MESSAGES.labels(self.durable, "rejected").inc()
        meta = msg.metadata
        letter = DeadLetter(
            service=self.service,
            stream=self.stream,
            consumer=self.durable,
            subject=msg.subject,
            stream_sequence=meta.sequence.stream,
            deliveries=meta.num_delivered,
            error=error[:2000],
            data=(msg.data or b"").decode("utf-8", "replace"),
        )
        try:
            await self._js.publish(
                dead_letter_subject(self.service, self.stream, self.durable),
                letter.to_bytes(),
                stream=DEAD_LETTER_STREAM,
                headers={MSG_ID_HEADER: f"{self.stream}/{self.durable}/{meta.sequence.stream}/invalid"},
            )
        except Exception as exc:
            log.warning("%s: could not store the dead letter (%s); redelivery will retry", self.durable, exc)
            await _settle(msg.nak(delay=self._backoff.delay(_deliveries(msg))))
            return
        DEAD_LETTERS.labels(self.service, self.stream, self.durable).inc()
        await _settle(msg.term())


class InProgress:
    """Sends ``+WPI`` for ``msg`` every ``interval`` seconds until cancelled.

    A timer, not a task per message: most messages are settled within milliseconds (an echo, an
    unchanged object), and a task costs a coroutine, two loop steps and a cancellation each.
    """

    def __init__(self, msg: Msg, interval: float) -> None:
        self._msg = msg
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(interval, self._beat)
        self._sending: asyncio.Task[None] | None = None

    def _beat(self) -> None:
        if self._sending is None or self._sending.done():
            self._sending = self._loop.create_task(self._send())
        self._timer = self._loop.call_later(self._interval, self._beat)

    async def _send(self) -> None:
        with contextlib.suppress(Exception):
            await self._msg.in_progress()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is not None:
            self._sending.cancel()


def keyed(
    queue: WorkQueue[K], keys_of: Callable[[Msg], Iterable[K]], *, decode_errors: tuple[type[Exception], ...]
) -> Handler:
    """A handler that submits every key ``keys_of(msg)`` names to ``queue`` and waits for them.

    ``decode_errors`` raised by ``keys_of`` make the message a :class:`BadMessage`.
    """

    async def handle(msg: Msg, context: Context) -> None:
        try:
            keys = list(keys_of(msg))
        except decode_errors as exc:
            raise BadMessage(f"{type(exc).__name__}: {exc}") from exc
        await asyncio.gather(*(queue.submit(key, context) for key in keys))

    return handle


def _deliveries(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:
        return 1


async def _settle(action: Awaitable[None]) -> None:
    try:
        await action
    except Exception as exc:  # the connection dropped; the message will be redelivered
        log.info("could not settle a message: %s", exc)
