"""The converter service: owner events in, desired sets out (design §2).

Durable pull consumers ``<prefix>-modelboosters`` and ``<prefix>-modelservings`` on
FERRY_OBJECTS, shared by every converter replica. Each message is converted by the pure
:func:`~ferry_converter.desired.desired_set` and published to FERRY_DESIRED with
``Nats-Msg-Id = desired.msg_id`` (so a redelivered or duplicated input is stored once); the
input is acked only after the publish was acknowledged (``NACK_ON_ERROR``: a failure means
redelivery, and after ``max_deliver`` the DeadLetterForwarder moves it to the dead-letter
stream). ``NatsTelemetryMiddleware`` continues the incoming ``traceparent`` into the publish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from ferry_schemas.bus import (
    DESIRED_STREAM,
    MSG_ID_HEADER,
    OBJECTS_STREAM,
    DesiredSet,
    ObjectEvent,
    Resource,
    object_filter,
)
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry.sdk.trace import TracerProvider

from ferry_converter.desired import desired_set
from ferry_converter.metrics import CONVERSION_SECONDS, CONVERSIONS, PUBLISH_DUPLICATES
from ferry_converter.settings import ConverterSettings

log = logging.getLogger(__name__)

RESOURCES = (Resource.MODEL_BOOSTERS, Resource.MODEL_SERVINGS)

LatestGeneration = Callable[[DesiredSet], Awaitable[int | None]]
"""The owner generation of the desired set already stored for the same owner (uid), if any."""


def durable_name(settings: ConverterSettings, resource: str) -> str:
    return f"{settings.durable_prefix}-{resource}"


@dataclass
class Converter:
    """Converts one event and publishes the result; the FastStream handlers call :meth:`handle`."""

    broker: NatsBroker
    settings: ConverterSettings
    latest_generation: LatestGeneration | None = None

    async def handle(self, body: bytes) -> DesiredSet | None:
        """Convert and publish; ``None`` when a newer generation is already stored (stale input)."""
        event = ObjectEvent.model_validate_json(body)
        started = time.perf_counter()
        desired = desired_set(event, self.settings.render_options)
        CONVERSION_SECONDS.labels(event.resource).observe(time.perf_counter() - started)
        if self.latest_generation is not None and not desired.deleted:
            stored = await self.latest_generation(desired)
            if stored is not None and stored > desired.owner.generation:
                CONVERSIONS.labels(event.resource, "stale").inc()
                log.info(
                    "skip %s %s/%s generation %s: generation %s already desired",
                    event.resource,
                    event.namespace,
                    event.name,
                    desired.owner.generation,
                    stored,
                )
                return None
        ack = await self.broker.publish(
            desired.to_bytes(),
            desired.subject,
            headers={MSG_ID_HEADER: desired.msg_id},
            stream=DESIRED_STREAM,
        )
        if ack is not None and ack.duplicate:
            PUBLISH_DUPLICATES.labels(event.resource).inc()
        outcome = "deleted" if desired.deleted else ("failed" if desired.errors else "ok")
        CONVERSIONS.labels(event.resource, outcome).inc()
        if desired.errors:
            log.warning(
                "%s %s/%s cannot be converted: %s",
                event.resource,
                event.namespace,
                event.name,
                "; ".join(str(e) for e in desired.errors),
            )
        return desired


def build_broker(
    settings: ConverterSettings,
    tracer_provider: TracerProvider | None = None,
    latest_generation: LatestGeneration | None = None,
) -> tuple[NatsBroker, Converter]:
    """The broker with both durable subscribers attached (not started)."""
    broker = NatsBroker(
        settings.nats_url,
        middlewares=(NatsTelemetryMiddleware(tracer_provider=tracer_provider),),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
    )
    converter = Converter(broker, settings, latest_generation)
    stream = JStream(OBJECTS_STREAM, declare=False)
    for resource in RESOURCES:
        durable = durable_name(settings, resource)
        subscriber = broker.subscriber(
            object_filter(resource),
            stream=stream,
            durable=durable,
            pull_sub=PullSub(batch_size=1, timeout=1.0),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            config=ConsumerConfig(
                durable_name=durable,
                deliver_policy=DeliverPolicy.ALL,
                max_deliver=settings.max_deliver,
                ack_wait=settings.ack_wait,
            ),
        )

        async def on_event(msg: NatsMessage) -> None:
            await converter.handle(msg.body)

        on_event.__name__ = on_event.__qualname__ = f"convert_{resource}"
        subscriber(on_event)
    return broker, converter
