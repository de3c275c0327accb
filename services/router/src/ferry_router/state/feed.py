"""Feeds the routing table from ``FERRY_OBJECTS`` (design §2).

Each router replica reads everything: one ordered push consumer per resource
(``ferry.obj.<resource>.>``) starting at the last message per subject
(:class:`~ferry_schemas.runtime.follow.StreamFollower`), so a new replica first reads the current
state of the world and then follows changes. The feed is *synced* once every resource has
delivered its initial snapshot; ``/readyz`` answers 200 only after that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, get_args

import orjson
from ferry_schemas.bus import OBJECTS_STREAM, EventType, Resource, object_filter
from ferry_schemas.runtime.follow import StreamFollower
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter

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
EVENT_TYPES = frozenset(get_args(EventType))


def decode_event(data: bytes) -> tuple[str, str, dict[str, Any] | None]:
    """(type, ``namespace/name``, object or ``None`` for a tombstone) of one ``ObjectEvent``.

    Only what the table needs, checked by hand: at a snapshot of 20,000 pods pydantic's full
    validation of every envelope (its timestamp, a deep copy of the object) was a third of the
    time to ``/readyz``. Raises ``ValueError`` naming what is wrong."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    kind, namespace, name, obj = raw.get("type"), raw.get("namespace"), raw.get("name"), raw.get("object")
    if kind not in EVENT_TYPES:
        raise ValueError(f"type: {kind!r} is not one of {sorted(EVENT_TYPES)}")
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise ValueError("namespace and name must be strings")
    if not isinstance(obj, dict):
        raise ValueError("object must be a JSON object")
    return str(kind), f"{namespace}/{name}", None if kind == "DELETED" else obj


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
        self._table = table
        self._counted: dict[tuple[str, str], Counter] = {}
        self._appliers: dict[str, Applier] = {
            Resource.MODEL_ROUTES: table.apply_route,
            Resource.MODEL_SERVERS: table.apply_server,
            Resource.PODS: table.apply_pod,
            Resource.EXTERNAL_MODEL_PROVIDERS: table.providers.apply_provider,
            Resource.CREDENTIALS: table.providers.apply_credential,
            **(extra or {}),
        }
        self._follower = StreamFollower(
            js,
            stream,
            {str(r): object_filter(r) for r in self._appliers},
            self._handle,
            name="router-bus-feed",
        )

    @property
    def synced(self) -> bool:
        return self._follower.synced

    async def wait_synced(self) -> None:
        await self._follower.wait_synced()

    async def start(self) -> None:
        """Subscribe (retrying until the stream exists) without blocking the caller."""
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def _handle(self, resource: str, msg: Msg) -> None:
        try:
            kind, key, obj = decode_event(msg.data)
        except ValueError as exc:
            BAD_EVENTS.labels(resource).inc()
            log.error("undecodable %s event on %s: %s", resource, msg.subject, exc)
        else:
            try:
                self._appliers[resource](key, obj)
                counter = self._counted.get((resource, kind))
                if counter is None:  # labels() per message was a few per cent of a snapshot's read
                    counter = self._counted[resource, kind] = EVENTS.labels(resource, kind)
                counter.inc()
            except Exception:
                BAD_EVENTS.labels(resource).inc()
                log.exception("could not apply %s %s", resource, key)


def connect_feed(nc: Client, table: RoutingTable, stream: str = OBJECTS_STREAM) -> BusFeed:
    return BusFeed(nc.jetstream(), table, stream=stream)
