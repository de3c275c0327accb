"""Feeds the routing table from ``FERRY_OBJECTS`` (design §2).

Each router replica reads everything: one ordered push consumer per resource
(``ferry.obj.<resource>.>``) starting at the last message per subject, so a new replica first
reads the current state of the world and then follows changes. The feed is *synced* once every
resource has delivered its initial snapshot; ``/readyz`` answers 200 only after that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from ferry_schemas.bus import OBJECTS_STREAM, ObjectEvent, Resource, object_filter
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client import Counter
from pydantic import ValidationError

from ferry_router.state.table import RoutingTable

log = logging.getLogger(__name__)

EVENTS = Counter(
    "ferry_router_bus_events_total", "Object events applied to the routing table.", ["resource", "type"]
)
BAD_EVENTS = Counter(
    "ferry_router_bus_bad_events_total", "Bus messages that could not be decoded.", ["resource"]
)

FED_RESOURCES = (
    Resource.MODEL_ROUTES,
    Resource.MODEL_SERVERS,
    Resource.PODS,
    Resource.EXTERNAL_MODEL_PROVIDERS,
    Resource.CREDENTIALS,
)
Applier = Callable[[str, dict[str, object] | None], None]


class BusFeed:
    """Keeps a :class:`RoutingTable` equal to the objects on the bus."""

    def __init__(
        self,
        js: JetStreamContext,
        table: RoutingTable,
        *,
        stream: str = OBJECTS_STREAM,
        extra: Mapping[str, Applier] | None = None,
    ) -> None:
        """``extra``: more resources and what to do with their objects (gateway mode)."""
        self._js = js
        self._table = table
        self._stream = stream
        self._subs: list[Subscription] = []
        self._appliers: dict[str, Applier] = {
            Resource.MODEL_ROUTES: table.apply_route,
            Resource.MODEL_SERVERS: table.apply_server,
            Resource.PODS: table.apply_pod,
            Resource.EXTERNAL_MODEL_PROVIDERS: table.providers.apply_provider,
            Resource.CREDENTIALS: table.providers.apply_credential,
            **(extra or {}),
        }
        self._synced: dict[str, asyncio.Event] = {str(r): asyncio.Event() for r in self._appliers}
        self._task: asyncio.Task[None] | None = None

    @property
    def synced(self) -> bool:
        return all(event.is_set() for event in self._synced.values())

    async def wait_synced(self) -> None:
        await asyncio.gather(*(e.wait() for e in self._synced.values()))

    async def start(self) -> None:
        """Subscribe (retrying until the stream exists) without blocking the caller."""
        self._task = asyncio.create_task(self._subscribe_all(), name="router-bus-feed")

    async def _subscribe_all(self) -> None:
        for resource in self._appliers:
            while True:
                try:
                    await self._subscribe(str(resource))
                    break
                except (NotFoundError, TimeoutError) as exc:
                    log.warning("waiting for stream %s (%s): %r", self._stream, resource, exc)
                    await asyncio.sleep(1.0)
                except Exception as exc:  # JetStream unavailable, NATS reconnecting...: keep trying
                    log.error("cannot subscribe to %s (%s), retrying: %r", self._stream, resource, exc)
                    await asyncio.sleep(2.0)

    async def _subscribe(self, resource: str) -> None:
        async def on_message(msg: Msg) -> None:
            self._handle(resource, msg)

        sub = await self._js.subscribe(
            object_filter(resource),
            stream=self._stream,
            cb=on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        )
        self._subs.append(sub)
        info = await sub.consumer_info()
        # Nothing pending and nothing delivered to this consumer: the resource has no objects yet.
        # (delivered.stream_seq is not 0 then: it starts at the stream's last sequence.) When
        # something was delivered, the message with num_pending == 0 marks the snapshot's end.
        if info.num_pending == 0 and (info.delivered is None or not info.delivered.consumer_seq):
            self._synced[resource].set()

    def _handle(self, resource: str, msg: Msg) -> None:
        try:
            event = ObjectEvent.model_validate_json(msg.data)
        except ValidationError as exc:
            BAD_EVENTS.labels(resource).inc()
            log.error("undecodable %s event on %s: %s", resource, msg.subject, exc)
        else:
            key = f"{event.namespace}/{event.name}"
            try:
                self._appliers[resource](key, None if event.deleted else event.object)
                EVENTS.labels(resource, event.type).inc()
            except Exception:
                BAD_EVENTS.labels(resource).inc()
                log.exception("could not apply %s %s", resource, key)
        try:
            pending = msg.metadata.num_pending
        except Exception:
            pending = 0
        if pending == 0:
            self._synced[resource].set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe failed: %r", exc)
        self._subs.clear()


def connect_feed(nc: Client, table: RoutingTable, stream: str = OBJECTS_STREAM) -> BusFeed:
    return BusFeed(nc.jetstream(), table, stream=stream)
