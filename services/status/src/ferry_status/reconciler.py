"""Routes bus messages to status reconciles and performs them (level-triggered).

A message only says *which* object to look at; the reconcile reads the object, its pods or
ModelServings from the bus-fed :class:`~ferry_schemas.runtime.view.ObjectView` (never from the API
server) and the last desired set / apply result from the :class:`~ferry_status.bus_state.PipelineView`
(followed from the snapshot streams), computes the whole
status and writes it with SSA only when it differs. The only API request is that write.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from ferry_schemas.bus import RESULTS_STREAM, ObjectEvent, Resource, content_hash
from ferry_schemas.labels import (
    BOOSTER_MANAGED_BY,
    BOOSTER_MANAGED_BY_VALUE,
    BOOSTER_MODEL_NAME,
    BOOSTER_MODEL_UID,
    MS_NAME,
)
from ferry_schemas.runtime.kubeconn import ApiError
from ferry_schemas.runtime.view import ObjectView
from ferry_schemas.workload import LWS_KIND
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from ferry_status.booster_status import compute_booster_status
from ferry_status.bus_state import DesiredRecord, PipelineView, ResultRecord
from ferry_status.kube import StatusApi
from ferry_status.lws_status import compute_lws_status, serving_of
from ferry_status.metrics import RECONCILE_LATENCY, STATUS_HELD, STATUS_UNCHANGED, STATUS_WRITES
from ferry_status.outcome import pipeline_outcome
from ferry_status.serving_status import compute_serving_status, revision_of

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ferry_status")

JSON = dict[str, Any]
Kind = Literal["modelservings", "modelboosters", "leaderworkersets"]
Key = tuple[Kind, str, str]
SERVINGS: Kind = "modelservings"
BOOSTERS: Kind = "modelboosters"
LWS: Kind = "leaderworkersets"
IGNORED_STATUS_KEYS = ("lastTransitionTime",)
SWEEP_MIN = 0.1
"""Seconds between two sweeps of ended holds at the least."""
PIPELINE = "pipeline"
"""The cause of a trigger from the pipeline view (a desired set or an apply result)."""
WAITS_FOR_APPLY: dict[str, frozenset[str]] = {
    SERVINGS: frozenset({SERVINGS, PIPELINE}),
    BOOSTERS: frozenset({BOOSTERS, PIPELINE}),
}
"""What may release a first status held for its apply result: a change of the object itself or of
its pipeline. A change of its children (a ModelServing's pods, a booster's ModelServings) cannot:
without a current successful result the hold does not look at them."""
WAITS_FOR_CHILDREN: dict[str, frozenset[str]] = {
    SERVINGS: frozenset({SERVINGS, PIPELINE, str(Resource.PODS)}),
    BOOSTERS: frozenset({BOOSTERS, PIPELINE, SERVINGS}),
}
"""What may release a first status held until the view shows what its apply result created: also
the children it waits for. A booster's pods never release its hold (it waits for its ModelServings'
first status, not for pods)."""


def keys_for_event(event: ObjectEvent) -> list[Key]:
    """Which status objects an object change affects."""
    meta = event.object.get("metadata") or {}
    keys: list[Key] = []
    if event.resource == Resource.PODS:
        labels = meta.get("labels") or {}
        if labels.get(MS_NAME):
            keys.append((SERVINGS, event.namespace, labels[MS_NAME]))
        if labels.get(BOOSTER_MANAGED_BY) == BOOSTER_MANAGED_BY_VALUE and labels.get(BOOSTER_MODEL_NAME):
            keys.append((BOOSTERS, event.namespace, labels[BOOSTER_MODEL_NAME]))  # why a booster waits
        return keys
    if event.resource == Resource.MODEL_SERVINGS:
        keys.append((SERVINGS, event.namespace, event.name))
        for ref in meta.get("ownerReferences") or ():
            if not ref.get("controller"):
                continue
            if ref.get("kind") == "ModelBooster":
                keys.append((BOOSTERS, event.namespace, ref["name"]))
            elif ref.get("kind") == LWS_KIND:
                keys.append((LWS, event.namespace, ref["name"]))
        return keys
    if event.resource == Resource.MODEL_BOOSTERS:
        return [(BOOSTERS, event.namespace, event.name)]
    return []


def keys_for_owner(stream: str, owner: tuple[str, str, str]) -> list[Key]:
    """The owner a desired set (of a booster: a ModelServing's is followed by its apply result) or an
    apply result is for."""
    resource, namespace, name = owner
    if resource == BOOSTERS or (resource == SERVINGS and stream == RESULTS_STREAM):
        return [(resource, namespace, name)]
    return []


class StatusReconciler:
    def __init__(
        self,
        kube: StatusApi,
        pipeline: PipelineView,
        view: ObjectView,
        *,
        first_write_hold: float = 0.0,
        first_write_hold_max: float = 0.0,
        requeue: Callable[[Key, float, Context | None], None] | None = None,
    ) -> None:
        self._kube = kube
        self._pipeline = pipeline
        self._view = view
        self._holds = FirstWriteHolds(first_write_hold, max(first_write_hold, first_write_hold_max))
        self._requeue = requeue
        """Reconciles ``key`` after a delay, in a trace (the work queue's ``add_after``)."""
        self._held_in: dict[Key, Context] = {}
        """Held keys → the trace of the reconcile that held them: the write their hold's end makes
        belongs to it."""
        self._released_by: dict[Key, frozenset[str]] = {}
        """Held keys → the causes of a change that may release them (:meth:`needs_reconcile`)."""
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self._written: dict[str, tuple[str, str, int]] = {}
        """uid → (hash of the status we computed, hash of what the server stored, its resourceVersion):
        avoids writing again when the server stores something slightly different (a pruned field)
        or when the view has not caught up with our own write yet."""

    def own_write(self, trigger: ObjectEvent) -> bool:
        """Whether ``trigger`` is the change our last status write of its object made (its
        resourceVersion is the one that write returned). Reconciling the object for it computes
        nothing new: every other input of its status (its spec, its children, its pipeline) comes
        with a trigger of its own, and a write is never left to this one (``_write`` skips only when
        the computed status equals the one written). It was a fifth of status's reconciles in a
        burst (one per written object), each reading the object and its children from the view."""
        if trigger.type == "DELETED" or not trigger.uid:
            return False
        written = self._written.get(trigger.uid)
        return written is not None and str(written[2]) == trigger.resource_version

    def needs_reconcile(self, key: Key, cause: str) -> bool:
        """Whether a change caused by ``cause`` (the resource of a changed object, or
        :data:`PIPELINE`) needs a reconcile of ``key``: always, unless ``key``'s first status is
        held. Then a change its hold does not read cannot release it (:data:`WAITS_FOR_APPLY`,
        :data:`WAITS_FOR_CHILDREN`), and for one that may, the hold is decided here, from the views,
        as its reconcile would decide it: only a released object (or one whose hold ran out) is
        queued. Most of a burst's changes of a new booster and its ModelServing come while their
        first status is held; each queued a reconcile (a task, a span, the settle) that read the
        views only to hold it again. The hold's own end is the sweep's, which re-queues the key."""
        released_by = self._released_by.get(key)
        if released_by is None:
            return True
        if cause not in released_by:
            return False
        kind, namespace, name = key
        if kind == SERVINGS:
            return self._serving_inputs(namespace, name, traced=False) is not None
        return self._booster_inputs(namespace, name, traced=False) is not None

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
        inputs = self._serving_inputs(namespace, name)
        if inputs is None:
            return False
        serving, desired, result, pods = inputs
        outcome = pipeline_outcome(serving, desired, result)
        status = compute_serving_status(serving, pods(), revision_of(serving), outcome=outcome)
        return await self._write(SERVINGS, serving, status)

    def _serving_inputs(self, namespace: str, name: str, *, traced: bool = True) -> ServingInputs | None:
        """The ModelServing and what its status is computed from; None when it is gone or its first
        status is held (``traced``: by a reconcile, whose trace the hold's end continues)."""
        serving = self._view.get(SERVINGS, namespace, name)
        if serving is None:
            return None
        desired = self._pipeline.desired(SERVINGS, namespace, name)
        result = self._pipeline.result(SERVINGS, namespace, name)
        # the pods are read only once the hold needs them (never while it waits for the apply result)
        pods = functools.cache(lambda: self._pods_of(serving))
        names = functools.cache(lambda: {p["metadata"].get("name") for p in pods()})
        if self._hold(
            (SERVINGS, namespace, name), serving, desired, result,
            lambda kind, child: kind != "Pod" or child in names(), traced=traced,
        ):  # fmt: skip
            return None
        return serving, desired, result, pods

    def _pods_of(self, serving: JSON) -> list[JSON]:
        meta = serving["metadata"]
        pods = self._view.list(Resource.PODS, meta.get("namespace", ""), {MS_NAME: meta["name"]})
        return [p for p in pods if _owned_by(p, meta.get("uid"))]

    async def _reconcile_lws(self, namespace: str, name: str) -> bool:
        lws = self._view.get(LWS, namespace, name)
        if lws is None:
            return False
        serving = self._view.get(SERVINGS, namespace, name)
        return await self._write(
            LWS, lws, compute_lws_status(lws, serving_of(lws, [serving] if serving else []))
        )

    async def _reconcile_booster(self, namespace: str, name: str) -> bool:
        inputs = self._booster_inputs(namespace, name)
        if inputs is None:
            return False
        booster, desired, result, servings = inputs
        pods = {s["metadata"]["name"]: self._pods_of(s) for s in servings()}
        status = compute_booster_status(booster, servings(), desired, result, pods=pods)
        return await self._write(BOOSTERS, booster, status)

    def _booster_inputs(self, namespace: str, name: str, *, traced: bool = True) -> BoosterInputs | None:
        """The ModelBooster and what its status is computed from; None when it is gone or its first
        status is held (``traced`` as for :meth:`_serving_inputs`)."""
        booster = self._view.get(BOOSTERS, namespace, name)
        if booster is None:
            return None
        uid = booster["metadata"].get("uid")
        desired = self._pipeline.desired(BOOSTERS, namespace, name)
        result = self._pipeline.result(BOOSTERS, namespace, name)
        # its ModelServings are read only once the hold needs them (not while it waits for the apply
        # result): each is a large object to decode
        selector = {BOOSTER_MODEL_UID: uid}
        servings = functools.cache(
            lambda: [s for s in self._view.list(SERVINGS, namespace, selector) if _owned_by(s, uid)]
        )
        statuses = functools.cache(lambda: {s["metadata"]["name"]: bool(s.get("status")) for s in servings()})
        if self._hold(
            (BOOSTERS, namespace, name), booster, desired, result,
            lambda kind, child: kind != "ModelServing" or statuses().get(child, False), traced=traced,
        ):  # fmt: skip
            return None
        return booster, desired, result, servings

    def _hold(
        self,
        key: Key,
        obj: JSON,
        desired: DesiredRecord | None,
        result: ResultRecord | None,
        shown: Shown,
        *,
        traced: bool = True,
    ) -> bool:
        """Whether to hold back the first status of a new object until its apply result and what it
        created are seen (:class:`FirstWriteHolds` says for how long); a sweep reconciles held
        objects again when their hold ends, in the trace of the last reconcile that held them
        (``traced``: this decision is a reconcile's; a change heard while held keeps the trace)."""
        if self._requeue is None or not awaiting_first_apply(obj, desired, result, shown):
            self._holds.release(key, time.time())
            self._unhold(key)
            return False
        since = hold_start(obj, last_step(obj, desired, result))
        if since is None or not self._holds.hold(key, since, time.time()):
            self._unhold(key)
            return False
        if traced or key not in self._held_in:
            self._held_in[key] = otel_context.get_current()
        applied = not awaiting_first_apply(obj, desired, result)  # only what it created is missing
        self._released_by[key] = (WAITS_FOR_CHILDREN if applied else WAITS_FOR_APPLY)[key[0]]
        STATUS_HELD.labels(key[0]).inc()
        self._arm_sweep(self._holds.end(since))
        return True

    def _unhold(self, key: Key) -> Context | None:
        self._released_by.pop(key, None)
        return self._held_in.pop(key, None)

    def _arm_sweep(self, end: float | None = None) -> None:
        """One timer for every held object, at the earliest time a hold can end (``end``: of the
        hold just made, else of every hold)."""
        if not self._holds:
            return
        at = max(time.time() + SWEEP_MIN, self._holds.next_end() if end is None else end)
        if self._sweep is not None:
            if self._sweep_at <= at:
                return
            self._sweep.cancel()
        self._sweep_at = at
        self._sweep = asyncio.get_running_loop().call_later(at - time.time(), self._run_sweep)

    def _run_sweep(self) -> None:
        self._sweep = None
        assert self._requeue is not None
        for key in self._holds.ended(time.time()):
            # its reconcile writes the status (or holds it again), in the trace that held it
            self._requeue(key, 0.0, self._unhold(key))
        self._arm_sweep()

    async def _write(self, kind: Kind, obj: JSON, status: JSON) -> bool:
        meta = obj["metadata"]
        current = obj.get("status") or {}
        uid = meta.get("uid", "")
        if _same(current, status):
            STATUS_UNCHANGED.labels(kind).inc()
            return False
        computed_hash = content_hash(status)
        written = self._written.get(uid)
        if written is not None and written[0] == computed_hash:
            seen_rv = _revision(meta.get("resourceVersion"))
            if written[1] == content_hash(current) or seen_rv <= written[2]:
                # the server keeps what we wrote, or the view has not seen our write yet
                STATUS_UNCHANGED.labels(kind).inc()
                return False
        try:
            stored = await self._kube.apply_status(kind, meta["namespace"], meta["name"], status)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        stored_meta = stored.get("metadata") or {}
        self._written[uid] = (
            computed_hash,
            content_hash(stored.get("status") or {}),
            _revision(stored_meta.get("resourceVersion")),
        )
        STATUS_WRITES.labels(kind).inc()
        log.info("%s %s/%s status written", kind, meta["namespace"], meta["name"])
        return True


ServingInputs = tuple[JSON, DesiredRecord | None, ResultRecord | None, Callable[[], list[JSON]]]
"""A ModelServing, its desired set, its apply result and (read when first called) its pods."""
BoosterInputs = tuple[JSON, DesiredRecord | None, ResultRecord | None, Callable[[], list[JSON]]]
"""A ModelBooster, its desired set, its apply result and (read when first called) its ModelServings."""
Shown = Callable[[str, str], bool]
"""Whether the view shows a child (kind, name) of an apply result as the first status needs it."""


def awaiting_first_apply(
    obj: JSON, desired: DesiredRecord | None, result: ResultRecord | None, shown: Shown | None = None
) -> bool:
    """A new object (no status yet) whose children the pipeline has not applied yet, or (``shown``)
    whose successful apply result names a created or applied child the view does not show yet.

    Its first status is written when the apply result arrives (which names it, so it is reconciled
    then); an interim "processing" status before that would be one more server-side apply per object
    at creation, a third of the status writes of a burst of new boosters. Likewise a ModelServing's
    first status waits for the pods its result created to reach the view, and a booster's for its
    ModelServings' first status (their changes name it, so it is reconciled then): written earlier,
    each would be written again a moment later with the pod or the ModelServing's counts. A
    conversion failure is never held back, nor is anything about an object that already has a
    status; and the hold is bounded (:meth:`StatusReconciler._hold`), so an object whose pipeline is
    down still gets one.
    """
    if obj.get("status"):
        return False
    uid = (obj.get("metadata") or {}).get("uid")
    if desired is not None and desired.uid != uid:
        desired = None
    if desired is not None and desired.errors:
        return False
    if result is None or result.uid != uid:
        return True
    if desired is not None and result.generation < desired.generation:
        return True
    return shown is not None and result.ok and not all(shown(kind, name) for kind, name in result.shown)


def hold_start(obj: JSON, step: float | None = None) -> float | None:
    """The object's creation or its pipeline's last ``step`` (Unix times), whichever is later."""
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    if not created:
        return None
    try:
        since = datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return since if step is None else max(since, step)


class FirstWriteHolds:
    """How long a new object's first status waits for its pipeline: coalescing while it is behind.

    An object is held at least ``hold`` seconds after its own last step through the pipeline
    (creation, desired set, apply result). While the pipeline works through a backlog — some held
    object took a step or was released in the last ``hold`` seconds — the hold is extended, so in a
    burst each status is written once, when its object's turn comes, however far behind the
    pipeline is. A stalled pipeline (no held object moving) ends every hold ``hold`` seconds after
    the last movement; no hold lasts more than ``limit`` seconds after the object's own last step.
    Nothing is held that says Failed (:func:`awaiting_first_apply`), and an object that has a
    status is never held, so a Ready or Failed change is never hidden; only a first status saying
    "not applied yet" waits, at most ``limit``.
    """

    def __init__(self, hold: float, limit: float) -> None:
        self.base = hold
        self.limit = limit
        self._held: dict[Key, float] = {}
        """Held keys → the start of their hold (the object's creation or last step, Unix time)."""
        self._moved = 0.0
        """When (Unix time) a held object last took a step or was released."""

    def __bool__(self) -> bool:
        return bool(self._held)

    def hold(self, key: Key, since: float, now: float) -> bool:
        """Whether ``key`` (whose pipeline last moved at ``since``) is held at ``now``."""
        previous = self._held.get(key)
        if since > now:  # a clock behind the server's never holds longer
            since = now if previous is None else previous
        if previous is not None and since > previous:
            self._moved = max(self._moved, since)  # its pipeline took a step
        if now >= self.end(since):
            self._held.pop(key, None)  # a hold that ran out is no movement of the pipeline
            return False
        self._held[key] = since
        return True

    def release(self, key: Key, now: float) -> None:
        """``key`` is no longer held (its first status is complete, or its hold ended)."""
        if self._held.pop(key, None) is not None:
            self._moved = max(self._moved, now)

    def end(self, since: float) -> float:
        """When the hold of an object whose pipeline last moved at ``since`` ends, unless the
        pipeline moves again."""
        return min(since + self.limit, max(since, self._moved) + self.base)

    def next_end(self) -> float:
        return min((self.end(since) for since in self._held.values()), default=0.0)

    def ended(self, now: float) -> list[Key]:
        """The keys whose hold has ended (forgotten here: their reconcile holds them again if it must)."""
        done = [key for key, since in self._held.items() if self.end(since) <= now]
        for key in done:
            del self._held[key]
        return done


def last_step(obj: JSON, desired: DesiredRecord | None, result: ResultRecord | None) -> float | None:
    """When the pipeline last moved for this object: its desired set produced, its apply result."""
    uid = (obj.get("metadata") or {}).get("uid")
    steps = []
    if desired is not None and desired.uid == uid:
        steps.append(desired.produced_at)
    if result is not None and result.uid == uid:
        steps.append(result.finished_at)
    return max(steps, default=None)


def _owned_by(obj: JSON, uid: str | None) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs)


def _revision(value: object) -> int:
    """A resourceVersion as a number (etcd revisions); an opaque one counts as the newest."""
    try:
        return int(str(value))
    except ValueError:
        return 1 << 62


def _same(current: JSON, desired: JSON) -> bool:
    """Equal for every key the status service sets (other writers' keys are not compared)."""
    return all(current.get(k) == v for k, v in desired.items())
