"""Publishes object events on FERRY_OBJECTS: one span per change, ``traceparent`` in the headers."""

from __future__ import annotations

import logging
import time

from ferry_schemas.bus import MSG_ID_HEADER, OBJECTS_STREAM, ObjectEvent
from ferry_schemas.runtime.jetstream import declare_streams
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from ferry_watcher.backoff import Backoff
from ferry_watcher.metrics import EVENTS_DUPLICATE, EVENTS_PUBLISHED, PUBLISH_FAILURES, PUBLISH_LATENCY

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ferry_watcher")


class EventPublisher:
    """Publishes each event until the stream acknowledges it (NATS outages are waited out)."""

    def __init__(self, js: JetStreamContext, publish_timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = publish_timeout

    async def publish(self, event: ObjectEvent, msg_id: str | None = None) -> bool:
        """Publish ``event``; True when the stream stored it, False when it was a duplicate.

        ``msg_id`` overrides ``event.msg_id`` (an unchanged object published again after a tombstone
        must not be deduplicated against its first publication). The span started here is the root
        of the reconcile trace for this change.
        """
        msg_id = msg_id or event.msg_id
        started = time.monotonic()
        attributes = {
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.destination.name": event.subject,
            "messaging.message.id": msg_id,
            "k8s.namespace.name": event.namespace,
            "ferry.resource": event.resource,
            "ferry.object.name": event.name,
            "ferry.event.type": event.type,
            "ferry.resource_version": event.resource_version,
        }
        with tracer.start_as_current_span(
            f"watch {event.resource} {event.type}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            headers = {MSG_ID_HEADER: msg_id}
            propagate.inject(headers)
            data = event.to_bytes()
            backoff = Backoff(initial=0.2, maximum=5.0)
            while True:
                try:
                    ack = await self._js.publish(
                        event.subject, data, stream=OBJECTS_STREAM, headers=headers, timeout=self._timeout
                    )
                    break
                except NoStreamResponseError:
                    PUBLISH_FAILURES.labels(event.resource).inc()
                    log.warning("stream %s missing (NATS lost its store?); redeclaring", OBJECTS_STREAM)
                    await self._redeclare()
                    await backoff.sleep()
                except (NatsError, TimeoutError, OSError) as exc:
                    PUBLISH_FAILURES.labels(event.resource).inc()
                    log.warning("publish of %s failed (%s); retrying", event.subject, exc)
                    await backoff.sleep()
            duplicate = bool(ack.duplicate)
            span.set_attribute("ferry.duplicate", duplicate)
        PUBLISH_LATENCY.labels(event.resource).observe(time.monotonic() - started)
        if duplicate:
            EVENTS_DUPLICATE.labels(event.resource).inc()
        else:
            EVENTS_PUBLISHED.labels(event.resource, event.type).inc()
        return not duplicate

    async def _redeclare(self) -> None:
        try:
            await declare_streams(self._js)
        except Exception as exc:
            log.warning("could not declare streams: %s", exc)
