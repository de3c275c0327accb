"""The objects the autoscaler reads, fed from ``FERRY_OBJECTS`` (snapshot, then changes).

Every replica reads everything with one ordered consumer per resource starting at the last message
per subject, so a new replica sees the current world first. Reads never touch the API server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ferry_schemas.bus import OBJECTS_STREAM, ObjectEvent, object_filter
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ChangeCallback = Callable[[ObjectEvent], None]


class ObjectView:
    def __init__(self, js: JetStreamContext, resources: Iterable[str]) -> None:
        self._js = js
        self.resources = tuple(str(r) for r in resources)
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {r: {} for r in self.resources}
        self._synced = {r: asyncio.Event() for r in self.resources}
        self._callbacks: list[ChangeCallback] = []
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def synced(self) -> bool:
        return all(e.is_set() for e in self._synced.values())

    async def wait_synced(self) -> None:
        await asyncio.gather(*(e.wait() for e in self._synced.values()))

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        return self._objects[str(resource)].get((namespace, name))

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        objects = self._objects[str(resource)]
        return [obj for (ns, _), obj in sorted(objects.items()) if namespace is None or ns == namespace]

    def on_change(self, callback: ChangeCallback) -> None:
        self._callbacks.append(callback)

    def apply(self, event: ObjectEvent) -> None:
        """Apply one change (also how unit tests feed a view)."""
        objects = self._objects.setdefault(event.resource, {})
        key = (event.namespace, event.name)
        if event.deleted:
            objects.pop(key, None)
        else:
            meta = event.object.get("metadata") or {}
            meta.pop("managedFields", None)
            objects[key] = event.object
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("view callback failed for %s", event.subject)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._subscribe_all(), name="autoscaler-view")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe failed: %r", exc)

    async def _subscribe_all(self) -> None:
        for resource in self.resources:
            while True:
                try:
                    await self._subscribe(resource)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the stream may not exist yet
                    log.warning("view: cannot follow %s yet (%r), retrying", resource, exc)
                    await asyncio.sleep(1.0)

    async def _subscribe(self, resource: str) -> None:
        async def on_message(msg: Msg) -> None:
            try:
                self.apply(ObjectEvent.model_validate_json(msg.data))
            except ValidationError as exc:
                log.error("view: undecodable event on %s: %s", msg.subject, exc)
            if msg.metadata.num_pending == 0:
                self._synced[resource].set()

        sub = await self._js.subscribe(
            object_filter(resource),
            stream=OBJECTS_STREAM,
            cb=on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        )
        self._subs.append(sub)
        info = await sub.consumer_info()
        if info.num_pending == 0 and (info.delivered is None or not info.delivered.consumer_seq):
            self._synced[resource].set()
