"""The one consumer runtime of the control services: a durable pull consumer feeding handlers.

A :class:`DurableConsumer` is shared by every replica of a service (JetStream spreads the messages).
It binds (creating or updating the durable), keeps pull requests open (:class:`Pull`), and runs
the handler of each message as its own task inside a CONSUMER span that continues the producer's
trace (W3C ``traceparent`` header).
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
import json
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram

from ferry_schemas.bus import DEAD_LETTER_STREAM, MSG_ID_HEADER, DeadLetter, dead_letter_subject
from ferry_schemas.runtime.jetstream import DEAD_LETTERS, PENDING, DeadLetterForwarder, record_pending
from ferry_schemas.runtime.nats_connect import on_reconnect
from ferry_schemas.runtime.settings import MAX_ACK_PENDING
from ferry_schemas.runtime.tasks import cancel_all
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
        pull_expires: float = 5.0,
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
        self._pull_expires = pull_expires
        self._slots = asyncio.Semaphore(max_ack_pending)
        self._backoff = backoff or Backoff(jitter=0.0)
        self._dead_letters = DeadLetterForwarder(nc, js, service, stream, durable)
        # metric children looked up once: labels() costs a lock and a tuple per call and message
        self._acked = MESSAGES.labels(durable, "acked")
        self._handle_seconds = HANDLE_SECONDS.labels(durable)
        self._pending = PENDING.labels(durable)
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
            await cancel_all(self._tasks)  # read at once, before done callbacks change the set
            await self._dead_letters.stop()

    async def _consume(self) -> None:
        # add_consumer creates or updates the durable (pull_subscribe never updates an existing one)
        await self._js.add_consumer(self.stream, config=self._config)
        pull = Pull(
            self._nc, self.stream, self.durable, self._batch, self._dispatch, expires=self._pull_expires
        )
        await pull.start()
        self.bound.set()
        log.info("%s: consuming %s from %s", self.durable, self.subject, self.stream)
        try:
            while True:
                if await pull.silent():  # no delivery and no expiry: is the consumer still there?
                    await self._js.consumer_info(self.stream, self.durable)  # NotFoundError: bind again
                    await pull.request_more(reset=True)
        finally:
            await pull.stop()

    async def _dispatch(self, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        started = time.monotonic()
        record_pending(self._pending, msg)
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
            self._acked.inc()
            self._handle_seconds.observe(time.monotonic() - started)
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


MAX_CONFLICTS = 10


class Pull:
    """One durable's messages as they come: pull requests kept open ahead of need, not fetches.

    A request asks for ``batch`` messages and lasts ``expires`` seconds; the server delivers each
    message as soon as it is available (up to the consumer's ``max_ack_pending`` unacked) to one
    inbox, and answers a request that expires with ``408`` and the count it did not deliver. The
    next request goes out when fewer than half a batch is still asked for, so a busy consumer sends
    one request per half batch of messages and an idle one one per ``expires``. ``nats-py``'s
    ``fetch`` instead sends a request per call, first a ``no_wait`` one answered by ``404`` when
    nothing is waiting, and returns only when its batch is full or its request expired: about two
    requests and one status answer per message at the bench's rates.

    A request or its answer lost is noticed at once when the connection comes back (a restarted
    server forgot the open requests), or else when nothing came for ``expires`` plus a margin (the
    consumer deleted: the server stays silent): :meth:`silent` returns True and the owner checks
    the consumer and asks again. A consumer answered ``409`` more than :data:`MAX_CONFLICTS` times in
    a row, or deleted, or ``503`` (JetStream unavailable) makes :meth:`silent` raise: bind again.
    """

    def __init__(
        self,
        nc: Client,
        stream: str,
        durable: str,
        batch: int,
        deliver: Callable[[Msg], Awaitable[None]],
        *,
        expires: float = 5.0,
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._batch = max(1, batch)
        self._deliver = deliver
        self._expires = expires
        self._request = json.dumps({"batch": self._batch, "expires": int(expires * 1e9)}).encode()
        self._asked = 0
        """Messages asked for by the requests still open and not delivered yet."""
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._heard = 0.0
        self._delivering = False
        self._conflicts = 0
        """409 answers in a row: past :data:`MAX_CONFLICTS` the consumer is bound again."""
        self._loop = asyncio.get_running_loop()
        self._failed: asyncio.Future[None] = self._loop.create_future()
        self._wake: asyncio.Future[None] = self._loop.create_future()
        self._forget_reconnects: Callable[[], None] | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)
        self._forget_reconnects = on_reconnect(self._nc, self._reconnected)
        await self.request_more(reset=True)

    def _reconnected(self) -> None:
        if not self._wake.done():
            self._wake.set_result(None)

    async def stop(self) -> None:
        if self._forget_reconnects is not None:
            self._forget_reconnects()
            self._forget_reconnects = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def request_more(self, *, reset: bool = False) -> None:
        """Ask for another batch (``reset``: forget what the open requests asked for: lost)."""
        if reset:
            self._asked = 0
        self._heard = time.monotonic()
        self._asked += self._batch
        await self._nc.publish(self._subject, self._request, reply=self._inbox)

    async def silent(self) -> bool:
        """Wait until nothing was heard for ``expires`` plus a margin (True), or raise the failure
        a status answer reported (the consumer deleted, JetStream unavailable). A delivery waiting
        for a free slot is not silence."""
        margin = self._expires + 2.0
        while True:
            quiet = 0.0 if self._delivering else time.monotonic() - self._heard
            if quiet >= margin:
                return True
            done, _ = await asyncio.wait({self._failed, self._wake}, timeout=margin - quiet)
            if self._failed in done:
                self._failed.result()
            if self._wake in done:  # reconnected: the server may have forgotten our requests
                self._wake = self._loop.create_future()
                return True

    async def _on_message(self, msg: Msg) -> None:
        self._heard = time.monotonic()
        headers = msg.headers
        status = headers.get(Header.STATUS) if headers else None
        if not status:
            self._asked -= 1
            self._conflicts = 0
            if self._asked <= self._batch // 2:
                await self.request_more()
            self._delivering = True
            try:
                await self._deliver(msg)
            finally:
                self._delivering = False
                self._heard = time.monotonic()
            return
        assert headers is not None
        description = str(headers.get(Header.DESCRIPTION, ""))
        if status == "408":  # a request expired; what it did not deliver is no longer asked for
            self._asked -= _int(headers.get("Nats-Pending-Messages"), self._batch)
            self._conflicts = 0
        elif status == "409" and self._conflicts < MAX_CONFLICTS and "deleted" not in description.lower():
            self._asked = 0  # too many requests waiting, a leader change: none of ours is open
            self._conflicts += 1
        elif status != "100":
            if not self._failed.done():
                self._failed.set_exception(NatsError(f"pull request answered {status} {description}"))
            return
        if self._asked <= self._batch // 2:
            await self.request_more(reset=self._asked < 0)


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


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
