"""The converter service: owner events in, desired sets out (design §2).

Durable pull consumers ``<prefix>-modelboosters`` and ``<prefix>-modelservings`` on
FERRY_OBJECTS, shared by every converter replica. Each message is converted by the pure
:func:`~ferry_converter.desired.desired_set` and published to FERRY_DESIRED with
``Nats-Msg-Id = <desired.msg_id>/<last sequence on the subject>`` (so a redelivered or duplicated
input is stored once, and content that comes back after a different set is stored again); the
input is acked only after the publish was acknowledged (``NACK_ON_ERROR``: a failure means
redelivery, and after ``max_deliver`` the DeadLetterForwarder moves it to the dead-letter
stream). ``NatsTelemetryMiddleware`` continues the incoming ``traceparent`` into the publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from ferry_schemas.bus import (
    DESIRED_STREAM,
    MSG_ID_HEADER,
    OBJECTS_PREFIX,
    OBJECTS_STREAM,
    DesiredSet,
    ObjectEvent,
    Resource,
    encode_token,
    object_filter,
)
from ferry_schemas.runtime.jetstream import DeadLetterForwarder, connect, nats_options
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from opentelemetry.sdk.trace import TracerProvider

from ferry_converter.desired import desired_set
from ferry_converter.latest import EXPECTED_LAST_SUBJECT_SEQUENCE, LatestDesired, stored_desired
from ferry_converter.metrics import CONVERSION_SECONDS, CONVERSIONS, PUBLISH_DUPLICATES
from ferry_converter.settings import ConverterSettings

log = logging.getLogger(__name__)

RESOURCES = (Resource.MODEL_BOOSTERS, Resource.MODEL_SERVINGS, Resource.LEADER_WORKER_SETS)
"""Owners the converter turns into desired sets (LeaderWorkerSets only arrive where the kind is served)."""


def durable_name(settings: ConverterSettings, resource: str) -> str:
    """``<prefix>-<resource>`` (``-<namespace>`` appended when filtering: a durable's filter is fixed)."""
    base = f"{settings.durable_prefix}-{resource}"
    return f"{base}-{encode_token(settings.namespace)}" if settings.namespace else base


def subject_filter(settings: ConverterSettings, resource: str) -> str:
    """``ferry.obj.<resource>.>``, or only one namespace's owners when ``namespace`` is set."""
    if settings.namespace:
        return f"{OBJECTS_PREFIX}.{resource}.{encode_token(settings.namespace)}.*"
    return object_filter(resource)


@dataclass
class Converter:
    """Converts one event and publishes the result; the FastStream handlers call :meth:`handle`."""

    broker: NatsBroker
    settings: ConverterSettings
    latest_desired: LatestDesired | None = None

    async def handle(self, body: bytes) -> DesiredSet | None:
        """Convert and publish; ``None`` when a newer generation is already stored (stale input).

        Nothing is published when the stream already holds this exact desired set (same msg id).
        """
        event = ObjectEvent.model_validate_json(body)
        started = time.perf_counter()
        desired = desired_set(event, self.settings.render_options)
        CONVERSION_SECONDS.labels(event.resource).observe(time.perf_counter() - started)
        headers = {MSG_ID_HEADER: desired.msg_id}
        if self.latest_desired is not None:
            stored = await self.latest_desired(desired)
            if stored.same_owner(desired) and stored.holds(desired):
                CONVERSIONS.labels(event.resource, "unchanged").inc()
                return desired  # already in the stream: a redelivery, a duplicate or a status-only change
            if (
                stored.same_owner(desired)
                and not desired.deleted
                and not stored.deleted
                and stored.generation > desired.owner.generation
            ):
                CONVERSIONS.labels(event.resource, "stale").inc()
                log.info(
                    "skip %s %s/%s generation %s: generation %s already desired",
                    event.resource,
                    event.namespace,
                    event.name,
                    desired.owner.generation,
                    stored.generation,
                )
                return None
            # The id carries the sequence it follows: content that returns after a different set
            # (A, B, A within the duplicate window) is stored again instead of being dropped.
            headers[MSG_ID_HEADER] = f"{desired.msg_id}/{stored.sequence}"
            headers[EXPECTED_LAST_SUBJECT_SEQUENCE] = str(stored.sequence)
        ack = await self.broker.publish(
            desired.to_bytes(), desired.subject, headers=headers, stream=DESIRED_STREAM
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
    latest_desired: LatestDesired | None = None,
) -> tuple[NatsBroker, Converter]:
    """The broker with both durable subscribers attached (not started)."""
    options = nats_options(settings.nats_url)
    # FastStream's pull subscribers take their fetch inbox from here, not from the connection: keep
    # it this user's own (its NATS permissions allow no other inbox)
    inbox = f"{options.get('inbox_prefix', '_INBOX')}.".encode()
    broker = NatsBroker(
        **options,
        middlewares=(NatsTelemetryMiddleware(tracer_provider=tracer_provider),),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
    )
    converter = Converter(broker, settings, latest_desired)
    stream = JStream(OBJECTS_STREAM, declare=False)
    for resource in RESOURCES:
        durable = durable_name(settings, resource)
        subscriber = broker.subscriber(
            subject_filter(settings, resource),
            stream=stream,
            durable=durable,
            pull_sub=PullSub(batch_size=1, timeout=1.0),
            inbox_prefix=inbox,
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


class ConverterService:
    """The running service: broker, dead-letter forwarders and the control connection.

    ``start`` waits for the watcher to declare the streams, then binds the durable consumers.
    """

    def __init__(self, settings: ConverterSettings, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self._provider = tracer_provider
        self._nc: Client | None = None
        self._forwarders: list[DeadLetterForwarder] = []
        self.broker: NatsBroker | None = None
        self.converter: Converter | None = None
        self.started = False

    def ready(self) -> bool:
        return self.started and self._nc is not None and self._nc.is_connected

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """Bind and start consuming; ``False`` when ``stop`` was set while waiting for the streams."""
        stop = stop or asyncio.Event()
        settings = self.settings
        self._nc = await connect(settings.nats_url, f"ferry-{settings.service}-control")
        js = self._nc.jetstream()
        while not stop.is_set():
            try:
                for stream in (OBJECTS_STREAM, DESIRED_STREAM):
                    await js.stream_info(stream)
                break
            except NotFoundError:
                log.info("waiting for %s and %s to be declared", OBJECTS_STREAM, DESIRED_STREAM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        if stop.is_set():
            return False
        self.broker, self.converter = build_broker(settings, self._provider, stored_desired(js))
        for resource in RESOURCES:
            forwarder = DeadLetterForwarder(
                self._nc, js, settings.service, OBJECTS_STREAM, durable_name(settings, resource)
            )
            await forwarder.start()
            self._forwarders.append(forwarder)
        await self.broker.start()
        self.started = True
        log.info("converter consuming %s", ", ".join(subject_filter(settings, r) for r in RESOURCES))
        return True

    async def stop(self) -> None:
        self.started = False
        if self.broker is not None:
            await self.broker.stop()
        for forwarder in self._forwarders:
            await forwarder.stop()
        self._forwarders.clear()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None
