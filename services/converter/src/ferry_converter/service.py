"""The converter service: owner changes in, desired sets out (design §2).

View-driven, like the applier and status (``ferry_schemas.runtime``): an
:class:`~ferry_schemas.runtime.view.ObjectView` follows ModelBoosters, ModelServings and
LeaderWorkerSets on FERRY_OBJECTS (ordered consumers: nothing durable, nothing acked) and keeps each
owner without its status, packed. Its change callback queues the owner in one
:class:`~ferry_schemas.runtime.workqueue.WorkQueue` with the change's trace context (the informer's
event handler feeding controller-runtime's work queue), unless the change left the kept object the
same: a status write of a booster or a ModelServing (most of the owners' changes) costs a decode and
a compare, no message and no conversion. The queue converts owners concurrently
(``FERRY_CONVERTER_WORKERS``), one conversion per owner at a time, coalesces a burst of changes into
one conversion of the newest, and retries a failed one with back-off forever.

Nothing is lost without a durable consumer: a conversion is a function of the owner as it is now,
so an owner needs one conversion after its last change. The view never skips a message and resumes
after the last one it handled; at start (the view holds its snapshot) every owner it holds, and
every tombstone in it, is queued, and again on every membership change (the owners taken over).
Replicas split the owners by :mod:`ferry_schemas.runtime.members` (bucket
``ferry_converter_members``); two replicas converting one owner at once stay safe, as below. The
durable consumers an earlier converter read are deleted at start.

Each conversion is the pure :func:`~ferry_converter.desired.desired_set`, published to
FERRY_DESIRED with ``Nats-Msg-Id = <desired.msg_id>/<last sequence on the subject>`` (a
duplicated input is stored once; content that comes back after a different set is stored again) and
``Nats-Expected-Last-Subject-Sequence`` (replicas cannot reorder generations). The publish continues
the trace of the change that queued it (``traceparent``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ferry_schemas.bus import (
    DESIRED_STREAM,
    MSG_ID_HEADER,
    OBJECTS_STREAM,
    WIRE_JSON,
    DesiredSet,
    ObjectEvent,
    Resource,
    encode_token,
)
from ferry_schemas.runtime.jetstream import connect, delete_durables, wait_for_streams
from ferry_schemas.runtime.members import ALL, Members, key_name, members_bucket, replica_id
from ferry_schemas.runtime.members import owner as member_owning
from ferry_schemas.runtime.start_traces import StartTraces
from ferry_schemas.runtime.view import Change, ObjectView
from ferry_schemas.runtime.workqueue import WorkQueue
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError
from opentelemetry import propagate, trace
from opentelemetry.context import Context

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
    """The durable consumer an earlier converter read ``resource`` with: ``<prefix>-<resource>``
    (``-<namespace>`` appended when filtering)."""
    base = f"{settings.durable_prefix}-{resource}"
    return f"{base}-{encode_token(settings.namespace)}" if settings.namespace else base


def retired_durables(settings: ConverterSettings) -> list[tuple[str, str]]:
    """The durable consumers an earlier converter read (its view now queues the owners): deleted at
    start, so the server stops keeping their state and pending messages."""
    return [(OBJECTS_STREAM, durable_name(settings, resource)) for resource in RESOURCES]


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

    def forget(self, key: OwnerKey) -> None:
        """The next conversion of ``key`` is not skipped (another replica may have published since)."""
        self.fingerprints.pop(key, None)


@dataclass
class Pending:
    """The newest change per owner not converted yet, as the view's change callback handed it over.

    A reconcile converts this event (a tombstone is only here: the view no longer holds the object);
    an owner queued without one (a resync) is converted from what the view holds.
    """

    events: dict[OwnerKey, ObjectEvent] = field(default_factory=dict)

    def offer(self, key: OwnerKey, event: ObjectEvent) -> None:
        self.events[key] = event

    def take(self, key: OwnerKey) -> ObjectEvent | None:
        return self.events.get(key)

    def done(self, key: OwnerKey, event: ObjectEvent) -> None:
        """Forget the owner's event unless a newer one arrived during the conversion."""
        if self.events.get(key) is event:
            del self.events[key]


class OthersDeletions:
    """Deletions of owners another replica converts, kept ``keep`` seconds after they were heard.

    No durable consumer redelivers a tombstone and the view no longer holds a deleted owner, so if
    the replica owning it dies before converting the deletion, the replica that takes its owners
    over finds it only here (:meth:`ConverterService.resync` after a membership change).
    """

    def __init__(self, keep: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.keep = keep
        self._clock = clock
        self._events: dict[OwnerKey, tuple[ObjectEvent, float]] = {}
        """In the order heard, so the oldest expire first."""

    def __len__(self) -> int:
        return len(self._events)

    def heard(self, key: OwnerKey, event: ObjectEvent) -> None:
        """Another replica's owner changed: keep it if it is a deletion, forget it otherwise."""
        self._events.pop(key, None)
        now = self._clock()
        if event.deleted:
            self._events[key] = (event, now)
        while self._events:
            oldest = next(iter(self._events))
            if now - self._events[oldest][1] <= self.keep:
                break
            del self._events[oldest]

    def take(self, owns: Callable[[OwnerKey], bool]) -> dict[OwnerKey, ObjectEvent]:
        """The kept deletions of owners this replica now handles (forgotten here)."""
        mine = {key: event for key, (event, _) in self._events.items() if owns(key)}
        for key in mine:
            del self._events[key]
        return mine


def without_status(obj: dict[str, Any]) -> dict[str, Any]:
    """What the converter's view keeps of an owner: no conversion reads its status, so a status-only
    change leaves the kept object the same (``Change.same``) and queues nothing."""
    return {k: v for k, v in obj.items() if k != "status"} if "status" in obj else obj


def owners_view(js: JetStreamContext, namespace: str = "") -> ObjectView:
    """The owners as the converter keeps them: without status, packed, no label index (it selects
    nothing by label); ``namespace``: only that namespace's."""
    return ObjectView(
        js,
        RESOURCES,
        namespace=namespace,
        project=dict.fromkeys(RESOURCES, without_status),
        pack=True,
        indexed_labels=(),
    )


class ConverterService:
    """The running service: connection, the owners' view, membership, the keyed queue.

    ``start`` waits for the watcher to declare the streams, follows the owners and, once the view
    holds them, queues every owner this replica handles.
    """

    def __init__(self, settings: ConverterSettings) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._view: ObjectView | None = None
        self._members: Members | None = None
        self._pending = Pending()
        self._others_deleted = OthersDeletions(keep=3 * settings.member_ttl)
        self._converted = Converted()
        self._live = False
        """False until the view holds its snapshot: start then queues every owner it holds."""
        self._start_traces = StartTraces()
        """An owner changed while the snapshot loads is converted at start in that change's trace."""
        self._taken_under: frozenset[str] | None = None
        """The live replicas this one last took its owners under (None: it took every owner)."""
        self.converter: Converter | None = None
        self.queue: WorkQueue[OwnerKey] = WorkQueue(
            "converter", self._convert, workers=max(1, settings.workers)
        )

    def ready(self) -> bool:
        return self._nc is not None and self._nc.is_connected and self._live

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """Follow the owners and start converting; ``False`` when ``stop`` was set while waiting for
        the streams or the view's snapshot."""
        stop = stop or asyncio.Event()
        settings = self.settings
        self._nc = await connect(settings.nats_url, f"ferry-{settings.service}")
        js = self._nc.jetstream()
        if not await wait_for_streams(js, (OBJECTS_STREAM, DESIRED_STREAM), stop):
            return False
        self.converter = Converter(jetstream_publisher(js), settings, stored_desired(js))
        namespace = settings.namespace
        scope = encode_token(namespace) if namespace else ALL  # replicas that see the same owners
        member_id = replica_id()
        bucket = members_bucket(settings.service)
        self._members = Members(js, bucket, member_id, ttl=settings.member_ttl, scope=scope)
        self._view = owners_view(js, namespace)
        self._view.on_change(self._changed)
        await self._members.start()
        await self._view.start()
        view, members = self._view, self._members

        async def synced() -> None:
            await asyncio.gather(view.wait_synced(), members.wait_known())

        waiting = [asyncio.create_task(synced()), asyncio.create_task(stop.wait())]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in waiting:
            task.cancel()
        if not self._view.synced:
            return False
        self._live = True
        log.info(
            "converter %s following %s: %d owners queued",
            member_id,
            ", ".join(self._view.filter_subject(r) for r in RESOURCES),
            self.resync(contexts=self._start_traces.take()),
        )
        await delete_durables(js, retired_durables(settings))  # housekeeping, after the owners are queued
        self._taken_under = self._members.live
        self._members.on_change(self._members_changed)
        return True

    def _members_changed(self) -> None:
        """The live replicas changed: queue the owners that became this replica's. A replica that
        joined takes from this one only what it gives up, so only a departure queues anything."""
        assert self._members is not None
        before, self._taken_under = self._taken_under, self._members.live
        log.info("members changed: %d owners taken over queued", self.resync(before))

    def resync(
        self, before: frozenset[str] | None = None, contexts: Mapping[OwnerKey, Context] | None = None
    ) -> int:
        """Queue every owner the view holds, and every tombstone not converted yet, that this replica
        handles (with ``before``, a former live set: only those it did not handle under that set),
        converted whatever this replica converted before: another may have published since. Each
        is queued in the trace ``contexts`` names for it, else in a trace of its own."""
        contexts = contexts or {}
        assert self._view is not None
        for key, event in self._others_deleted.take(self._owns).items():
            self._pending.offer(key, event)  # its converter went away: it may not have converted it
        me = None if self._members is None else self._members.member_id
        keys: set[OwnerKey] = {(str(r), ns, name) for r in RESOURCES for ns, name in self._view.keys(r)}
        keys.update(self._pending.events)
        queued = 0
        for key in sorted(keys):
            if not self._owns(key):
                theirs = self._pending.events.pop(key, None)  # another replica's now
                if theirs is not None:
                    self._others_deleted.heard(key, theirs)
            elif before is None or member_owning(key_name(key), before) != me:
                self._converted.forget(key)
                self.queue.add(key, contexts.get(key))
                queued += 1
        return queued

    async def stop(self) -> None:
        self._live = False
        if self._members is not None:
            await self._members.stop()
        await self.queue.stop()
        if self._view is not None:
            await self._view.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None

    def _owns(self, key: OwnerKey) -> bool:
        return self._members is None or self._members.owns(key_name(key))

    def _changed(self, change: Change) -> None:
        """The view applied a change: queue its owner, with the change's trace context.

        Skipped: a change that left the kept object the same (a status write: the view keeps no
        status) unless it is a relist's ``SYNC`` (after lost streams it puts the desired sets back),
        and owners another replica handles (their fingerprint is forgotten: that replica may publish
        something else before the owner comes back here).
        """
        event = change.event
        key = (event.resource, event.namespace, event.name)
        if not self._live:  # the snapshot: start queues what the view then holds, and its tombstones
            self._start_traces.heard(change)
            if event.deleted:
                self._pending.offer(key, event)
            else:
                self._pending.events.pop(key, None)  # created again: the view holds it
            return
        if change.same and event.type != "SYNC":
            return
        if not self._owns(key):
            self._converted.forget(key)
            self._others_deleted.heard(key, event)
            return
        self._pending.offer(key, event)
        self.queue.add(key, change.context)

    async def _convert(self, key: OwnerKey, context: Context | None) -> None:
        event = self._pending.take(key)
        if event is None:  # queued by a resync: what the view holds, converted whatever was before
            assert self._view is not None
            obj = self._view.get(*key)
            if obj is None:
                return  # gone, and its tombstone converted
            event = ObjectEvent.from_object("SYNC", key[0], obj)
        assert self.converter is not None
        fingerprint = self._converted.seen(key, event)
        if fingerprint is None:
            CONVERSIONS.labels(event.resource, "unchanged").inc()
            self._pending.done(key, event)
            return  # the content of the last conversion here (a change reverted while queued)
        with tracer.start_as_current_span(
            f"converter convert {event.subject}",
            context=context,
            attributes={"ferry.owner.kind": event.resource, "ferry.owner.name": event.name},
        ):
            await self.converter.handle(event)
        self._converted.done(key, event, fingerprint)
        self._pending.done(key, event)
