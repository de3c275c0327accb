"""Publishes object events on FERRY_OBJECTS: one span per change, ``traceparent`` in the headers.

Publishes are pipelined: :meth:`EventPublisher.publish` sends and returns, and the stream's acks are
awaited in the background, up to ``window`` in flight. Awaiting each ack before the next send made
every informer one round trip per event (a burst of 1,000 pod changes took 1,000 round trips, and
each a socket write of its own); now a burst goes out in a few writes. Order is kept: everything
goes out on one connection in the order it was sent, and a publish that failed is sent again only
while no later event of the same object was sent after it (the later one carries the whole, newer
object, so the stream never steps back). :meth:`flush` waits for every ack — before anything reads
the stream back (tombstones) and before an informer reports itself synced.

An ack is confirmed by a callback on its future and a timer, not by a task awaiting it: a task and
``asyncio.wait_for`` per publish cost 17.5 µs of the watcher's CPU, a callback and a timer 6. Only a
publish that failed gets a task (the resends below).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time

from ferry_schemas.bus import MSG_ID_HEADER, OBJECTS_STREAM, ObjectEvent
from ferry_schemas.runtime.jetstream import declare_streams
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from ferry_watcher.backoff import Backoff
from ferry_watcher.metrics import EVENTS_DUPLICATE, EVENTS_PUBLISHED, PUBLISH_FAILURES, PUBLISH_LATENCY

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ferry_watcher")


class EventPublisher:
    """Publishes each event until the stream acknowledges it (NATS outages are waited out)."""

    def __init__(self, js: JetStreamContext, publish_timeout: float = 5.0, window: int = 256) -> None:
        self._js = js
        self._timeout = publish_timeout
        self._window = asyncio.Semaphore(window)
        self._serial = itertools.count()
        self._latest: dict[str, int] = {}
        """subject → serial of the last event sent for it (an older failed one is not sent again)."""
        self._in_flight = 0
        """Events sent and neither acknowledged nor superseded yet (:meth:`flush` waits for none)."""
        self._settled = asyncio.Event()
        self._settled.set()
        self._resending: set[asyncio.Task[None]] = set()

    async def publish(self, event: ObjectEvent, msg_id: str | None = None) -> None:
        """Send ``event``; its ack is awaited in the background (:meth:`flush` waits for all).

        ``msg_id`` overrides ``event.msg_id`` (an unchanged object published again after a tombstone
        must not be deduplicated against its first publication). The span started here is the root
        of the reconcile trace for this change; it ends when the stream acknowledged the event.
        """
        await self._window.acquire()
        msg_id = msg_id or event.msg_id
        serial = next(self._serial)
        self._latest[event.subject] = serial
        span = tracer.start_span(
            f"watch {event.resource} {event.type}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "send",
                "messaging.destination.name": event.subject,
                "messaging.message.id": msg_id,
                "k8s.namespace.name": event.namespace,
                "ferry.resource": event.resource,
                "ferry.object.name": event.name,
                "ferry.event.type": event.type,
                "ferry.resource_version": event.resource_version,
            },
        )
        headers = {MSG_ID_HEADER: msg_id}
        propagate.inject(headers, context=trace.set_span_in_context(span))
        sent = _Sent(event, event.to_bytes(), headers, serial, span, time.monotonic())
        self._in_flight += 1
        self._settled.clear()
        try:
            ack = await self._js.publish_async(
                event.subject, sent.data, stream=OBJECTS_STREAM, headers=dict(headers)
            )
        except (NatsError, OSError) as exc:  # not even sent (connection down): retried in order below
            self._retry(sent, exc)
            return
        except BaseException:  # cancelled (stopping): nothing to wait for
            self._settle(sent, None)
            raise
        timer = asyncio.get_running_loop().call_later(self._timeout, ack.cancel)
        ack.add_done_callback(functools.partial(self._acked, sent, timer))

    async def flush(self) -> None:
        """Wait until the stream acknowledged (or superseded) everything sent so far."""
        await self._settled.wait()

    def _acked(self, sent: _Sent, timer: asyncio.TimerHandle, ack: asyncio.Future[PubAck]) -> None:
        """The ack's future is done: the stream stored the event, refused it, or the timer ran out
        (it cancels the future: nats-py then forgets the reply)."""
        timer.cancel()
        if ack.cancelled():
            self._retry(sent, TimeoutError(f"no ack within {self._timeout} s"))
        elif (exc := ack.exception()) is not None:
            self._retry(sent, exc)
        else:
            self._settle(sent, ack.result())

    def _retry(self, sent: _Sent, exc: BaseException) -> None:
        task = asyncio.create_task(self._publish_again(sent, exc))
        self._resending.add(task)
        task.add_done_callback(self._resending.discard)

    async def _publish_again(self, sent: _Sent, exc: BaseException) -> None:
        stored: PubAck | None = None
        try:
            await self._failed(sent.event, exc)
            stored = await self._resend(sent)
        finally:
            self._settle(sent, stored)

    def _settle(self, sent: _Sent, stored: PubAck | None) -> None:
        """The event is stored (``stored``) or superseded by a later one of its subject (None)."""
        event = sent.event
        try:
            if stored is not None:
                sent.span.set_attribute("ferry.duplicate", bool(stored.duplicate))
                PUBLISH_LATENCY.labels(event.resource).observe(time.monotonic() - sent.started)
                if stored.duplicate:
                    EVENTS_DUPLICATE.labels(event.resource).inc()
                else:
                    EVENTS_PUBLISHED.labels(event.resource, event.type).inc()
        finally:
            sent.span.end()
            if self._latest.get(event.subject) == sent.serial:
                del self._latest[event.subject]
            self._window.release()
            self._in_flight -= 1
            if not self._in_flight:
                self._settled.set()

    async def _resend(self, sent: _Sent) -> PubAck | None:
        """Publish again, awaiting the ack, until stored; None once a later event of the subject was
        sent (that one carries the newer object; sending this one after it would step back)."""
        event = sent.event
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            await backoff.sleep()
            if self._latest.get(event.subject) != sent.serial:
                sent.span.set_attribute("ferry.superseded", True)
                return None
            try:
                return await self._js.publish(
                    event.subject, sent.data, stream=OBJECTS_STREAM, headers=dict(sent.headers),
                    timeout=self._timeout,
                )  # fmt: skip
            except (NatsError, TimeoutError, OSError) as exc:
                await self._failed(event, exc)

    async def _failed(self, event: ObjectEvent, exc: BaseException) -> None:
        """Count and log a failed publish; a missing stream is declared again."""
        PUBLISH_FAILURES.labels(event.resource).inc()
        if not isinstance(exc, NoStreamResponseError):
            log.warning("publish of %s failed (%s); retrying", event.subject, exc)
            return
        log.warning("stream %s missing (NATS lost its store?); redeclaring", OBJECTS_STREAM)
        try:
            await declare_streams(self._js)
        except Exception as declare_failure:
            log.warning("could not declare streams: %s", declare_failure)


class _Sent:
    """One event on its way: what was sent, for the ack and for a resend."""

    __slots__ = ("data", "event", "headers", "serial", "span", "started")

    def __init__(
        self,
        event: ObjectEvent,
        data: bytes,
        headers: dict[str, str],
        serial: int,
        span: Span,
        started: float,
    ) -> None:
        self.event = event
        self.data = data
        self.headers = headers
        self.serial = serial
        self.span = span
        self.started = started
