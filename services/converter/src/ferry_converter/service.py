"""The converter service: owner events in, desired sets out (design §2).

On the control services' one consumer runtime (``ferry_schemas.runtime``), like the applier and
status: a :class:`~ferry_schemas.runtime.consumer.DurableConsumer` per owner kind
(``<prefix>-modelboosters``, ``-modelservings``, ``-leaderworkersets`` on FERRY_OBJECTS, shared by
every replica) decodes each message and submits its owner to one
:class:`~ferry_schemas.runtime.workqueue.WorkQueue` keyed by owner. The queue converts owners
concurrently (``FERRY_CONVERTER_WORKERS``), one conversion per owner at a time, and coalesces a
burst of events for one owner (status writes, relists) into one conversion of the newest event;
a failed conversion (NATS unavailable, a racing replica) is retried with back-off while the
message is kept in progress, and the message is acked once a conversion that saw it succeeded.
An undecodable message is dead-lettered at once.

Each conversion is the pure :func:`~ferry_converter.desired.desired_set`, published to
FERRY_DESIRED with ``Nats-Msg-Id = <desired.msg_id>/<last sequence on the subject>`` (a
redelivered or duplicated input is stored once; content that comes back after a different set is
stored again) and ``Nats-Expected-Last-Subject-Sequence`` (replicas cannot reorder generations).
The publish continues the incoming trace (``traceparent``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from ferry_schemas.bus import (
    DESIRED_STREAM,
    MSG_ID_HEADER,
    OBJECTS_PREFIX,
    OBJECTS_STREAM,
    WIRE_JSON,
    DesiredSet,
    ObjectEvent,
    Resource,
    encode_token,
    object_filter,
)
from ferry_schemas.runtime.consumer import BadMessage, DurableConsumer
from ferry_schemas.runtime.jetstream import connect, wait_for_streams
from ferry_schemas.runtime.workqueue import WorkQueue
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from pydantic import ValidationError

from ferry_converter.desired import desired_set
from ferry_converter.latest import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    WRONG_LAST_SEQUENCE,
    LatestDesired,
    StoredDesired,
    WrongLastSequence,
    stored_desired,
)
from ferry_converter.metrics import CONVERSION_SECONDS, CONVERSIONS, PUBLISH_DUPLICATES
from ferry_converter.settings import ConverterSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ferry_converter")

RESOURCES = (Resource.MODEL_BOOSTERS, Resource.MODEL_SERVINGS, Resource.LEADER_WORKER_SETS)
"""Owners the converter turns into desired sets (LeaderWorkerSets only arrive where the kind is served)."""

OwnerKey = tuple[str, str, str]
"""(resource, namespace, name): one conversion at a time per owner."""


class Published(NamedTuple):
    """Where the stream stored a published message (``duplicate``: an earlier one with its id)."""

    sequence: int
    duplicate: bool


Publish = Callable[[str, bytes, dict[str, str]], Awaitable[Published]]
"""Publish a desired set to FERRY_DESIRED (subject, body, headers); raises
:class:`~ferry_converter.latest.WrongLastSequence` when the subject's last message is not the
one the headers expect."""


def durable_name(settings: ConverterSettings, resource: str) -> str:
    """``<prefix>-<resource>`` (``-<namespace>`` appended when filtering: a durable's filter is fixed)."""
    base = f"{settings.durable_prefix}-{resource}"
    return f"{base}-{encode_token(settings.namespace)}" if settings.namespace else base


def subject_filter(settings: ConverterSettings, resource: str) -> str:
    """``ferry.obj.<resource>.>``, or only one namespace's owners when ``namespace`` is set."""
    if settings.namespace:
        return f"{OBJECTS_PREFIX}.{resource}.{encode_token(settings.namespace)}.*"
    return object_filter(resource)


def jetstream_publisher(js: JetStreamContext) -> Publish:
    """A :data:`Publish` through JetStream (the ack is awaited, so an error means retry)."""

    async def publish(subject: str, body: bytes, headers: dict[str, str]) -> Published:
        try:
            ack = await js.publish(subject, body, stream=DESIRED_STREAM, headers=headers)
        except BadRequestError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                raise WrongLastSequence(str(exc)) from exc
            raise
        return Published(int(ack.seq), bool(ack.duplicate))

    return publish


@dataclass
class Converter:
    """Converts one owner event and publishes the result."""

    publish: Publish
    settings: ConverterSettings
    latest_desired: LatestDesired | None = None
    _last: dict[str, StoredDesired] = field(default_factory=dict)
    """Per desired subject, its last message as this replica last stored or read it."""

    async def handle(self, event: ObjectEvent, context: Context | None = None) -> DesiredSet | None:
        """Convert and publish; ``None`` when a newer generation is already stored (stale input).

        Nothing is published when the stream already holds this exact desired set (same msg id).
        """
        started = time.perf_counter()
        desired = desired_set(event, self.settings.render_options)
        CONVERSION_SECONDS.labels(event.resource).observe(time.perf_counter() - started)
        body, msg_id = desired.wire()
        if self.latest_desired is None:
            headers = {MSG_ID_HEADER: msg_id}
            propagate.inject(headers, context=context)
            published = await self.publish(desired.subject, body, headers)
        else:
            outcome = await self._publish_after_last(desired, body, msg_id, context)
            if outcome == "stale":
                CONVERSIONS.labels(event.resource, "stale").inc()
                log.info(
                    "skip %s %s/%s generation %s: a newer generation is already desired",
                    event.resource,
                    event.namespace,
                    event.name,
                    desired.owner.generation,
                )
                return None
            if outcome == "unchanged":
                CONVERSIONS.labels(event.resource, "unchanged").inc()
                return desired  # already in the stream: a redelivery, a duplicate or a status-only change
            published = outcome
        if published.duplicate:
            PUBLISH_DUPLICATES.labels(event.resource).inc()
        outcome_label = "deleted" if desired.deleted else ("failed" if desired.errors else "ok")
        CONVERSIONS.labels(event.resource, outcome_label).inc()
        if desired.errors:
            log.warning(
                "%s %s/%s cannot be converted: %s",
                event.resource,
                event.namespace,
                event.name,
                "; ".join(str(e) for e in desired.errors),
            )
        return desired

    async def _publish_after_last(
        self, desired: DesiredSet, body: bytes, msg_id: str, context: Context | None
    ) -> Published | Literal["unchanged", "stale"]:
        """Publish ``desired`` after the last message on its subject, unless that one already is
        this set (``unchanged``) or a newer generation of its owner (``stale``).

        What this replica last stored or read on the subject (nothing, for a subject it never saw)
        stands in for reading it: the publish expects that sequence, so the server rejects it when
        anything else is the last message (another replica, a restart), and the subject is then
        read and decided on again. A skip is only ever decided on a fresh read. The outcome is the
        same as reading first, without a read per conversion.
        """
        assert self.latest_desired is not None
        stored, read = self._last.get(desired.subject, StoredDesired()), False
        while True:
            if stored.same_owner(desired) and (
                stored.holds(msg_id)
                or (
                    not desired.deleted
                    and not stored.deleted
                    and stored.generation > desired.owner.generation
                )
            ):
                if not read:
                    stored, read = await self.latest_desired(desired), True
                    continue
                self._remember(desired, stored)
                return "unchanged" if stored.holds(msg_id) else "stale"
            # The id carries the sequence it follows: content that returns after a different set
            # (A, B, A within the duplicate window) is stored again instead of being dropped.
            headers = {
                MSG_ID_HEADER: f"{msg_id}/{stored.sequence}",
                EXPECTED_LAST_SUBJECT_SEQUENCE: str(stored.sequence),
            }
            propagate.inject(headers, context=context)
            try:
                published = await self.publish(desired.subject, body, headers)
            except WrongLastSequence:
                self._last.pop(desired.subject, None)
                if read:
                    raise  # a replica published between our read and our publish: retried
                stored, read = await self.latest_desired(desired), True
                continue
            if published.duplicate:
                # The id was stored before, and deduplication comes before the sequence check: the
                # subject may hold anything after that message. Decide on what it holds.
                self._last.pop(desired.subject, None)
                if not read:
                    stored, read = await self.latest_desired(desired), True
                    continue
                return published
            self._remember(desired, StoredDesired.of(desired, published.sequence, headers[MSG_ID_HEADER]))
            return published

    def _remember(self, desired: DesiredSet, stored: StoredDesired) -> None:
        """Keep the subject's last message while its owner lives (a tombstone ends it)."""
        if desired.deleted or stored.sequence <= 0:
            self._last.pop(desired.subject, None)
        else:
            self._last[desired.subject] = stored


VOLATILE_METADATA = ("resourceVersion", "managedFields")


def input_fingerprint(event: ObjectEvent) -> str:
    """What a conversion of ``event`` depends on: the object without its status and without the
    metadata every write changes (a status-only change has the fingerprint of the change before)."""
    meta = {k: v for k, v in (event.object.get("metadata") or {}).items() if k not in VOLATILE_METADATA}
    body = {k: v for k, v in event.object.items() if k not in ("status", "metadata")}
    # compared only with this process's own earlier fingerprints: the wire encoder (sorted keys,
    # like canonical_json, at a seventh of its cost) is as good a stable form here
    return hashlib.sha256(WIRE_JSON.encode([event.resource, event.deleted, meta, body])).hexdigest()[:16]


@dataclass
class Converted:
    """The input fingerprint of each owner's last conversion here.

    An event with the same fingerprint converts to the same desired set, which is then already in
    FERRY_DESIRED or superseded by a newer one (so a stale input stays skipped); the conversion,
    the last-message read and the publish are skipped. A relist's ``SYNC`` event is always
    converted: after a NATS restart that lost the stream it is what puts the desired sets back.
    """

    fingerprints: dict[OwnerKey, str] = field(default_factory=dict)

    def seen(self, key: OwnerKey, event: ObjectEvent) -> str | None:
        """The event's fingerprint, or ``None`` when the last conversion of ``key`` had it."""
        fingerprint = input_fingerprint(event)
        if event.type != "SYNC" and self.fingerprints.get(key) == fingerprint:
            return None
        return fingerprint

    def done(self, key: OwnerKey, event: ObjectEvent, fingerprint: str) -> None:
        if event.deleted:
            self.fingerprints.pop(key, None)  # the owner is gone: nothing more to skip
        else:
            self.fingerprints[key] = fingerprint


@dataclass
class Newest:
    """The newest event seen per owner and not yet converted (by stream sequence)."""

    events: dict[OwnerKey, tuple[int, ObjectEvent]] = field(default_factory=dict)

    def offer(self, key: OwnerKey, sequence: int, event: ObjectEvent) -> None:
        held = self.events.get(key)
        if held is None or held[0] <= sequence:
            self.events[key] = (sequence, event)

    def take(self, key: OwnerKey) -> tuple[int, ObjectEvent] | None:
        return self.events.get(key)

    def done(self, key: OwnerKey, sequence: int) -> None:
        """Forget the owner's event unless a newer one arrived during the conversion."""
        held = self.events.get(key)
        if held is not None and held[0] == sequence:
            del self.events[key]


class ConverterService:
    """The running service: connection, consumers, the keyed queue.

    ``start`` waits for the watcher to declare the streams, then binds the durable consumers.
    """

    def __init__(self, settings: ConverterSettings) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._consumers: list[DurableConsumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._newest = Newest()
        self._converted = Converted()
        self.converter: Converter | None = None
        self.queue: WorkQueue[OwnerKey] = WorkQueue(
            "converter", self._convert, workers=max(1, settings.workers)
        )

    def ready(self) -> bool:
        return (
            self._nc is not None
            and self._nc.is_connected
            and bool(self._consumers)
            and all(c.bound.is_set() for c in self._consumers)
        )

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """Bind and start consuming; ``False`` when ``stop`` was set while waiting for the streams."""
        stop = stop or asyncio.Event()
        settings = self.settings
        self._nc = await connect(settings.nats_url, f"ferry-{settings.service}")
        js = self._nc.jetstream()
        if not await wait_for_streams(js, (OBJECTS_STREAM, DESIRED_STREAM), stop):
            return False
        self.converter = Converter(jetstream_publisher(js), settings, stored_desired(js))
        self._consumers = [
            DurableConsumer(
                self._nc,
                js,
                service=settings.service,
                stream=OBJECTS_STREAM,
                durable=durable_name(settings, resource),
                subject=subject_filter(settings, resource),
                handler=self._on_event,
                max_deliver=settings.max_deliver,
                ack_wait=settings.ack_wait,
                max_ack_pending=settings.max_ack_pending,
                batch=settings.batch,
            )
            for resource in RESOURCES
        ]
        self._tasks = [asyncio.create_task(c.run(), name=c.durable) for c in self._consumers]
        await asyncio.gather(*(c.bound.wait() for c in self._consumers))
        log.info("converter consuming %s", ", ".join(subject_filter(settings, r) for r in RESOURCES))
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.queue.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None

    async def _on_event(self, msg: Msg, context: Context) -> None:
        """Decode, remember as the owner's newest event, and wait until a conversion saw it."""
        try:
            event = ObjectEvent.model_validate_json(msg.data)
        except ValidationError as exc:
            raise BadMessage(f"not an ObjectEvent: {exc}") from exc
        key = (event.resource, event.namespace, event.name)
        self._newest.offer(key, msg.metadata.sequence.stream, event)
        await self.queue.submit(key, context)

    async def _convert(self, key: OwnerKey, context: Context | None) -> None:
        held = self._newest.take(key)
        if held is None:
            return  # an earlier conversion already took this owner's newest event
        sequence, event = held
        assert self.converter is not None
        fingerprint = self._converted.seen(key, event)
        if fingerprint is None:
            CONVERSIONS.labels(event.resource, "unchanged").inc()
            self._newest.done(key, sequence)
            return  # a status-only change (or a redelivery) of what was converted last
        with tracer.start_as_current_span(
            f"converter convert {event.subject}",
            context=context,
            attributes={"ferry.owner.kind": event.resource, "ferry.owner.name": event.name},
        ):
            await self.converter.handle(event)
        self._converted.done(key, event, fingerprint)
        self._newest.done(key, sequence)
