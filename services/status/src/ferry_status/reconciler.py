"""Routes bus messages to status reconciles and performs them (level-triggered).

A message only says *which* object to look at; the reconcile re-reads the object, its pods or
ModelServings from the API server and the last desired set / apply result from the snapshot
streams, computes the whole status and writes it with SSA only when it differs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Literal

from ferry_schemas.bus import (
    ApplyResult,
    DesiredSet,
    ObjectEvent,
    Resource,
    content_hash,
    parse_subject,
)
from ferry_schemas.labels import BOOSTER_MODEL_UID, MS_NAME
from ferry_schemas.workload import LWS_KIND, serving_revision
from kubernetes_asyncio.client.exceptions import ApiException
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.context import Context

from ferry_status.booster_status import compute_booster_status
from ferry_status.bus_state import last_desired, last_result
from ferry_status.kube import StatusApi
from ferry_status.lws_status import compute_lws_status, serving_of
from ferry_status.metrics import RECONCILE_LATENCY, STATUS_UNCHANGED, STATUS_WRITES
from ferry_status.outcome import pipeline_outcome
from ferry_status.serving_status import compute_serving_status
from ferry_status.workqueue import KeyedQueue

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ferry_status")

JSON = dict[str, Any]
Kind = Literal["modelservings", "modelboosters", "leaderworkersets"]
Key = tuple[Kind, str, str]
SERVINGS: Kind = "modelservings"
BOOSTERS: Kind = "modelboosters"
LWS: Kind = "leaderworkersets"
IGNORED_STATUS_KEYS = ("lastTransitionTime",)


def keys_for_event(event: ObjectEvent) -> list[Key]:
    """Which status objects an object change affects."""
    meta = event.object.get("metadata") or {}
    if event.resource == Resource.PODS:
        serving = (meta.get("labels") or {}).get(MS_NAME)
        return [(SERVINGS, event.namespace, serving)] if serving else []
    if event.resource == Resource.MODEL_SERVINGS:
        keys: list[Key] = [(SERVINGS, event.namespace, event.name)]
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "ModelBooster" and ref.get("controller"):
                keys.append((BOOSTERS, event.namespace, ref["name"]))
            elif ref.get("kind") == LWS_KIND and ref.get("controller"):
                keys.append((LWS, event.namespace, ref["name"]))
        return keys
    if event.resource == Resource.MODEL_BOOSTERS:
        return [(BOOSTERS, event.namespace, event.name)]
    return []


def keys_for_owner_subject(subject: str) -> list[Key]:
    """``ferry.desired.…`` / ``ferry.applied.…``: the owner the set or result is for."""
    parts = parse_subject(subject)
    if parts.resource in (SERVINGS, BOOSTERS):
        return [(parts.resource, parts.namespace, parts.name)]
    return []


class StatusReconciler:
    def __init__(self, kube: StatusApi, js: JetStreamContext, workers: int = 8, settle: float = 0.0) -> None:
        self._kube = kube
        self._js = js
        self.queue: KeyedQueue[Key] = KeyedQueue(self.reconcile, workers, settle)
        self._written: dict[str, tuple[str, str]] = {}
        """uid → (hash of the status we computed, hash of what the server stored): avoids writing
        again when the server stores something slightly different (e.g. a pruned field)."""

    async def on_object(self, msg: Msg, context: Context) -> None:
        event = ObjectEvent.model_validate(json.loads(msg.data))
        await self._submit_all(keys_for_event(event), context)

    async def on_owner_message(self, msg: Msg, context: Context) -> None:
        await self._submit_all(keys_for_owner_subject(msg.subject), context)

    async def _submit_all(self, keys: list[Key], context: Context) -> None:
        await asyncio.gather(*(self.queue.submit(k, context) for k in keys))

    async def reconcile(self, key: Key, context: Context | None) -> None:
        kind, namespace, name = key
        started = time.monotonic()
        with tracer.start_as_current_span(
            f"status reconcile {kind}",
            context=context,
            attributes={"k8s.namespace.name": namespace, "ferry.object.name": name, "ferry.resource": kind},
        ) as span:
            if kind == SERVINGS:
                wrote = await self._reconcile_serving(namespace, name)
            elif kind == LWS:
                wrote = await self._reconcile_lws(namespace, name)
            else:
                wrote = await self._reconcile_booster(namespace, name)
            span.set_attribute("ferry.status.written", wrote)
        RECONCILE_LATENCY.labels(kind).observe(time.monotonic() - started)

    async def _reconcile_serving(self, namespace: str, name: str) -> bool:
        serving = await self._kube.get(SERVINGS, namespace, name)
        if serving is None:
            return False
        pods = await self._kube.list_pods(namespace, f"{MS_NAME}={name}")
        uid = serving["metadata"].get("uid")
        pods = [p for p in pods if _owned_by(p, uid)]
        roles = ((serving.get("spec") or {}).get("template") or {}).get("roles") or []
        desired = await last_desired(self._js, SERVINGS, namespace, name)
        outcome = pipeline_outcome(serving, desired, await last_result(self._js, SERVINGS, namespace, name))
        status = compute_serving_status(serving, pods, serving_revision(roles), outcome=outcome)
        return await self._write(SERVINGS, serving, status)

    async def _reconcile_lws(self, namespace: str, name: str) -> bool:
        lws = await self._kube.get(LWS, namespace, name)
        if lws is None:
            return False
        serving = await self._kube.get(SERVINGS, namespace, name)
        return await self._write(
            LWS, lws, compute_lws_status(lws, serving_of(lws, [serving] if serving else []))
        )

    async def _reconcile_booster(self, namespace: str, name: str) -> bool:
        booster = await self._kube.get(BOOSTERS, namespace, name)
        if booster is None:
            return False
        uid = booster["metadata"].get("uid")
        servings = await self._kube.list_objects(SERVINGS, namespace, f"{BOOSTER_MODEL_UID}={uid}")
        servings = [s for s in servings if _owned_by(s, uid)]
        desired: DesiredSet | None = await last_desired(self._js, BOOSTERS, namespace, name)
        result: ApplyResult | None = await last_result(self._js, BOOSTERS, namespace, name)
        status = compute_booster_status(booster, servings, desired, result)
        return await self._write(BOOSTERS, booster, status)

    async def _write(self, kind: Kind, obj: JSON, status: JSON) -> bool:
        meta = obj["metadata"]
        current = obj.get("status") or {}
        uid = meta.get("uid", "")
        if _same(current, status):
            STATUS_UNCHANGED.labels(kind).inc()
            return False
        computed_hash = content_hash(status)
        if self._written.get(uid) == (computed_hash, content_hash(current)):
            STATUS_UNCHANGED.labels(kind).inc()
            return False
        try:
            stored = await self._kube.apply_status(kind, meta["namespace"], meta["name"], status)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        self._written[uid] = (computed_hash, content_hash(stored.get("status") or {}))
        STATUS_WRITES.labels(kind).inc()
        log.info("%s %s/%s status written", kind, meta["namespace"], meta["name"])
        return True


def _owned_by(obj: JSON, uid: str | None) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs)


def _same(current: JSON, desired: JSON) -> bool:
    """Equal for every key the status service sets (other writers' keys are not compared)."""
    return all(current.get(k) == v for k, v in desired.items())
