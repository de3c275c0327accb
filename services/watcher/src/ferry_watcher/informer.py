"""One list-then-watch loop per resource (the informer pattern, ecosystem notes §3.3).

List, publish what changed, watch from the list's resourceVersion with bookmarks; on 410 Gone
relist and publish tombstones for objects that vanished meanwhile; on any other failure reconnect
with back-off. The first list also compares with what FERRY_OBJECTS already holds, so a restarted
watcher neither floods the stream with unchanged objects nor forgets deletions it missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from ferry_schemas.bus import ObjectEvent, object_subject, utcnow
from ferry_schemas.runtime.kubeconn import ApiError, KubeConnection
from nats.js import JetStreamContext

from ferry_watcher.backoff import Backoff
from ferry_watcher.kube import list_objects, watch_events
from ferry_watcher.metrics import EVENTS_FILTERED, EVENTS_SKIPPED, OBJECTS, RELISTS, WATCH_ERRORS
from ferry_watcher.publisher import EventPublisher
from ferry_watcher.resources import WatchedResource
from ferry_watcher.snapshot import stored_entries, stored_object

log = logging.getLogger(__name__)

JSON = dict[str, Any]
LIVE_EVENTS = ("ADDED", "MODIFIED")
Observer = Callable[[ObjectEvent], None]
"""Told of every object the informer holds after each list and change (tombstones included)."""


class Informer:
    """Keeps FERRY_OBJECTS in step with one resource; ``synced`` is set after the first list."""

    def __init__(
        self,
        api: KubeConnection,
        js: JetStreamContext,
        publisher: EventPublisher,
        watched: WatchedResource,
        *,
        namespace: str | None = None,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._api = api
        self._js = js
        self._publisher = publisher
        self.watched = watched
        self._namespace = namespace if watched.namespaced else None
        self._watch_timeout = watch_timeout
        self._backoff = backoff or Backoff()
        self._observer = observer
        self._known: dict[str, str] = {}
        """subject → msg id of the last event the stream holds for it (tombstones excluded)."""
        self._seeded = False
        self.synced = asyncio.Event()

    @property
    def resource(self) -> str:
        return self.watched.plural

    async def run(self) -> None:
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    resource_version = await self.relist()
                    self.synced.set()
                resource_version = await self.watch(resource_version)
                self._backoff.reset()
            except ApiError as exc:
                if exc.status == 410:
                    log.info("%s: watch expired (410 Gone); relisting", self.resource)
                    RELISTS.labels(self.resource, "gone").inc()
                    resource_version = None
                    continue
                WATCH_ERRORS.labels(self.resource).inc()
                log.warning("%s: API error %s; retrying", self.resource, exc)
                if exc.status in (401, 403, 404):
                    resource_version = None  # RBAC or a CRD changed: start over from a list
                if exc.status == 404 and resource_version is None:
                    # the CRD is not installed (yet): nothing to publish, so this resource is in
                    # step with the stream; keep trying, it may be installed later
                    self.synced.set()
                await self._backoff.sleep()
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                WATCH_ERRORS.labels(self.resource).inc()
                log.warning("%s: connection failed (%s); reconnecting", self.resource, exc)
                await self._backoff.sleep()

    async def relist(self) -> str:
        """List everything, publish what the stream lacks and tombstones for what vanished."""
        path = self.watched.path(self._namespace)
        if not self._seeded:
            # Read the stream BEFORE listing: everything it holds was then published before the list
            # began, so an entry the list lacks really vanished. Read after the list, an object created
            # in between (published by another watcher) would look vanished and get a false tombstone.
            stored = await stored_entries(self._js, self.resource, self._namespace)
            self._known = {s: e.msg_id for s, e in stored.items() if not e.tombstone}
            self._seeded = True
        items, resource_version = await list_objects(self._api, path, self.watched.label_selector)
        fresh = {self._subject(obj): self.slim(obj) for obj in items if self.wants(obj)}
        if len(fresh) < len(items):
            EVENTS_FILTERED.labels(self.resource).inc(len(items) - len(fresh))
        self._listed_unwanted([obj for obj in items if self._subject(obj) not in fresh])
        for subject in sorted(self._known.keys() - fresh.keys()):
            await self._tombstone(subject, resource_version)
        for subject, obj in fresh.items():
            event = ObjectEvent.from_object("SYNC", self.resource, obj)
            self._observe(event)
            if self._known.get(subject) == event.msg_id:
                EVENTS_SKIPPED.labels(self.resource).inc()
                continue
            await self._publisher.publish(event)
            self._remember(event)
        await self._publisher.flush()  # synced means stored
        OBJECTS.labels(self.resource).set(len(self._known))
        log.info("%s: listed %d objects at rv %s", self.resource, len(items), resource_version)
        return resource_version

    async def watch(self, resource_version: str) -> str:
        """Follow changes until the server ends the watch; returns the last resourceVersion seen."""
        path = self.watched.path(self._namespace)
        async for raw in watch_events(
            self._api, path, self.watched.label_selector, resource_version, self._watch_timeout
        ):
            kind = raw.get("type")
            obj: JSON = self.slim(raw.get("object") or {})
            new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            if kind == "BOOKMARK":
                resource_version = new_rv or resource_version
                continue
            if kind not in (*LIVE_EVENTS, "DELETED"):
                continue
            resource_version = new_rv or resource_version
            event = ObjectEvent.from_object(kind, self.resource, obj)
            if not self.wants(obj):
                EVENTS_FILTERED.labels(self.resource).inc()
                self._unwanted(event)
                if event.subject not in self._known:
                    continue
                # it was published and is no longer wanted: consumers must forget it
                event = ObjectEvent.from_object("DELETED", self.resource, obj)
            await self.publish(event)
        return resource_version

    async def publish(self, event: ObjectEvent, msg_id: str | None = None) -> None:
        """Publish one change and keep the informer's record of what the stream holds."""
        await self._publisher.publish(event, msg_id)
        self._observe(event)
        if event.deleted:
            self._forget(event.subject)
        else:
            self._remember(event)
        OBJECTS.labels(self.resource).set(len(self._known))

    def wants(self, obj: JSON) -> bool:
        """Whether ``obj`` belongs on the stream (every object, unless a subclass filters)."""
        return True

    def slim(self, obj: JSON) -> JSON:
        """What of ``obj`` goes on the stream (all of it, unless a subclass trims it)."""
        return obj

    def _listed_unwanted(self, objects: list[JSON]) -> None:
        """Told, on every list, of the objects :meth:`wants` filtered out (a subclass may track them)."""

    def _unwanted(self, event: ObjectEvent) -> None:
        """Told of every watched change of an object :meth:`wants` filters out."""

    def _remember(self, event: ObjectEvent) -> None:
        self._known[event.subject] = event.msg_id

    def _forget(self, subject: str) -> None:
        self._known.pop(subject, None)

    def _observe(self, event: ObjectEvent) -> None:
        if self._observer is not None:
            self._observer(event)

    async def _tombstone(self, subject: str, listed_at: str) -> None:
        """Publish DELETED for an object the stream holds but the API server no longer has.

        An entry newer than the list (``listed_at``) was published after the list was taken, so its
        absence from the list proves nothing; it is left alone.
        """
        await self._publisher.flush()  # the stream read next must hold everything sent
        last = await stored_object(self._js, subject)
        self._forget(subject)
        if last is None or last.deleted or _newer(last.resource_version, listed_at):
            return
        tombstone = last.model_copy(update={"type": "DELETED", "observed_at": utcnow()})
        log.info("%s: %s/%s vanished while unwatched; tombstone", self.resource, last.namespace, last.name)
        await self._publisher.publish(tombstone)
        self._observe(tombstone)

    def _subject(self, obj: JSON) -> str:
        meta = obj.get("metadata") or {}
        return object_subject(self.resource, meta.get("namespace") or "", meta["name"])


def _newer(resource_version: str, than: str) -> bool:
    """Whether ``resource_version`` is later than ``than`` (etcd revisions; opaque ones never are)."""
    try:
        return int(resource_version) > int(than)
    except ValueError:
        return False
