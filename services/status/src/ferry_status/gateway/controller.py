"""Ferry's Gateway API controller: the status of what the router serves (gateway mode).

Why here and not in a router "leader": the router is the internet-facing data plane and holds no
Kubernetes credentials; the status service already is the one writer of ``/status`` and the
control plane. It reads the Gateway API objects from ``FERRY_OBJECTS`` (every replica reads all,
like the router) and what the router replicas really serve from the ``ferry_gateway_listeners``
KV bucket, computes every status with the same rules the router routes by
(:class:`~ferry_schemas.gateway.view.GatewayWorld`), and writes only what differs — as a merge
patch conditional on the object's resourceVersion, so two status replicas never need a lease: the
second write of the same change fails with 409 or finds nothing left to change.

At start it also ensures Kthena's defaults exist: GatewayClass ``kthena-router`` (Ferry's
controllerName) and Gateway ``default`` with one HTTP listener on the router's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry_schemas.bus import (
    GATEWAY_LISTENERS_BUCKET,
    LISTENER_REPORT_TTL,
    ListenerReport,
    ObjectEvent,
    Resource,
)
from ferry_schemas.gateway.view import GATEWAY_RESOURCES, GatewayWorld
from ferry_schemas.runtime.jetstream import key_value
from ferry_schemas.runtime.kubeconn import ApiError
from ferry_schemas.runtime.tasks import cancel_all
from ferry_schemas.runtime.view import ObjectView
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError

from ferry_status.conditions import now_rfc3339, without_times
from ferry_status.gateway.kube import GatewayApi
from ferry_status.gateway.render import (
    Served,
    gateway_class_status,
    gateway_status,
    pool_status,
    route_status,
)
from ferry_status.passes import run_passes

log = logging.getLogger(__name__)
JSON = dict[str, Any]


class GatewayStatusController:
    def __init__(
        self,
        js: JetStreamContext,
        api: GatewayApi,
        *,
        controller_name: str,
        default_class: str,
        default_namespace: str,
        default_port: int,
        poll: float = 2.0,
    ) -> None:
        self._js = js
        self._api = api
        self.controller_name = controller_name
        self.default_class = default_class
        self.default_namespace = default_namespace
        self.default_port = default_port
        self.poll = poll
        self.world = GatewayWorld(controller_name)
        self.served = Served()
        self._dirty = asyncio.Event()
        self.view = ObjectView(js, GATEWAY_RESOURCES)
        self.keys: dict[str, set[str]] = {}
        """resource -> keys (``ns/name``, ``name`` when cluster-scoped) of the objects in the view."""
        self.view.on_change(lambda change: self._on_change(change.event))
        self._tasks: list[asyncio.Task[None]] = []
        self.defaults_ensured = False

    def _on_change(self, event: ObjectEvent) -> None:
        key = f"{event.namespace}/{event.name}" if event.namespace else event.name
        keys = self.keys.setdefault(event.resource, set())
        if event.deleted:
            keys.discard(key)
        else:
            keys.add(key)
        self.world.apply(event.resource, key, None if event.deleted else event.object)
        self._dirty.set()

    def _object(self, resource: str, key: str) -> JSON | None:
        namespace, _, name = key.rpartition("/")
        return self.view.get(resource, namespace, name)

    def _objects(self, resource: str) -> dict[str, JSON]:
        found = {key: self._object(resource, key) for key in sorted(self.keys.get(resource, ()))}
        return {key: obj for key, obj in found.items() if obj is not None}

    @property
    def synced(self) -> bool:
        return self.view.synced

    async def start(self) -> None:
        await self.view.start()
        self._tasks = [
            asyncio.create_task(self._reconcile_loop(), name="gateway-status"),
            asyncio.create_task(self._poll_reports(), name="gateway-reports"),
        ]

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        await self.view.stop()

    # ------------------------------------------------------------------ router reports

    async def _poll_reports(self) -> None:
        """Re-read the live listener reports (an expired KV entry sends no event, so poll)."""
        kv = None
        while True:
            try:
                if kv is None:
                    kv = await key_value(self._js, GATEWAY_LISTENERS_BUCKET, ttl=LISTENER_REPORT_TTL)
                served = await self._read_reports(kv)
                if served != self.served:
                    self.served = served
                    self._dirty.set()
            except Exception as exc:
                log.warning("listener reports not read: %r", exc)
            await asyncio.sleep(self.poll)

    async def _read_reports(self, kv: Any) -> Served:
        try:
            keys = await kv.keys()
        except NoKeysError:
            keys = []
        cutoff = datetime.now(UTC) - timedelta(seconds=LISTENER_REPORT_TTL)
        addresses: set[str] = set()
        bound: set[int] = set()
        errors: dict[int, str] = {}
        for key in keys:
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(key)
                if not entry.value:
                    continue
                report = ListenerReport.model_validate(json.loads(entry.value))
                if report.reported_at < cutoff:
                    continue
                addresses.add(report.address)
                for port, error in report.ports.items():
                    if error:
                        errors[int(port)] = error
                    else:
                        bound.add(int(port))
        return Served(
            tuple(sorted(addresses)), frozenset(bound), {p: e for p, e in errors.items() if p not in bound}
        )

    # ------------------------------------------------------------------ reconcile

    async def _reconcile_loop(self) -> None:
        await run_passes("gateway", self._dirty, lambda: self.view.synced, self._pass, resync=30.0)

    async def _pass(self) -> None:
        if not self.defaults_ensured:
            self.defaults_ensured = await self._ensure_defaults()
        await self.reconcile()

    async def reconcile(self) -> None:
        resolution = self.world.resolve()
        at = now_rfc3339()
        desired: list[tuple[str, str, JSON]] = []
        for name, verdict in resolution.classes.items():
            if (obj := self._object(Resource.GATEWAY_CLASSES, name)) is not None:
                status = gateway_class_status(obj.get("status") or {}, verdict, _gen(obj), at)
                desired.append((Resource.GATEWAY_CLASSES, name, status))
        for key, state in resolution.gateways.items():
            if (obj := self._object(Resource.GATEWAYS, key)) is not None:
                status = gateway_status(obj.get("status") or {}, state, self.served, _gen(obj), at)
                desired.append((Resource.GATEWAYS, key, status))
        for key, obj in self._objects(Resource.HTTP_ROUTES).items():
            route_state = resolution.routes.get(key)
            current = obj.get("status") or {}
            if route_state is None:
                if any(p.get("controllerName") == self.controller_name for p in current.get("parents") or []):
                    others = [
                        p for p in current["parents"] if p.get("controllerName") != self.controller_name
                    ]
                    desired.append((Resource.HTTP_ROUTES, key, {**current, "parents": others}))
                continue
            desired.append(
                (
                    Resource.HTTP_ROUTES,
                    key,
                    route_status(current, route_state, self.controller_name, _gen(obj), at),
                )
            )
        for key, obj in self._objects(Resource.INFERENCE_POOLS).items():
            gateways = resolution.pool_parents.get(key, [])
            status = pool_status(obj.get("status") or {}, gateways, self.controller_name, _gen(obj), at)
            desired.append((Resource.INFERENCE_POOLS, key, status))
        for resource, key, status in desired:
            obj = self._object(resource, key)
            if obj is None or without_times(obj.get("status") or {}) == without_times(status):
                continue
            await self._write(resource, key, obj, status)

    async def _write(self, resource: str, key: str, obj: JSON, status: JSON) -> None:
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        # a merge patch keeps fields it does not name: name the ones to drop (e.g. addresses)
        dropped = {field: None for field in obj.get("status") or {} if field not in status}
        try:
            await self._api.patch_status(resource, key, {**status, **dropped}, version)
            log.info("status of %s %s written", resource, key)
        except ApiError as exc:
            if exc.status in (404, 409):  # gone, or changed meanwhile: its next event re-drives us
                log.info("status of %s %s not written (%s); it changed meanwhile", resource, key, exc.status)
                return
            raise

    async def _ensure_defaults(self) -> bool:
        """Kthena's start-up objects, so manifests naming ``kthena-router``/``default`` work."""
        try:
            await self._api.ensure_gateway_class(self.default_class, self.controller_name)
            await self._api.ensure_default_gateway(
                self.default_namespace, self.default_class, self.default_port
            )
        except ApiError as exc:
            log.warning(
                "default GatewayClass/Gateway not created yet (%s %s); retrying", exc.status, exc.reason
            )
            self._dirty.set()
            return False
        return True


def _gen(obj: JSON) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)
