"""A held first status is reconciled again only once a change releases it."""

import asyncio
from datetime import UTC, datetime
from typing import Any

from ferry_schemas.bus import (
    DESIRED_STREAM,
    RESULTS_STREAM,
    ApplyResult,
    ChildResult,
    ConversionError,
    DesiredSet,
    ObjectEvent,
    OwnerKey,
    Resource,
)
from ferry_schemas.labels import (
    BOOSTER_MANAGED_BY,
    BOOSTER_MANAGED_BY_VALUE,
    BOOSTER_MODEL_NAME,
    BOOSTER_MODEL_UID,
    MS_NAME,
)
from ferry_schemas.runtime.view import ObjectView
from ferry_status.bus_state import DesiredRecord, PipelineView, ResultRecord
from ferry_status.reconciler import StatusReconciler
from ferry_status.triggers import Triggers

BOOSTER = ("modelboosters", "ns", "mb")
SERVING = ("modelservings", "ns", "mb-main")


class NoWrites:
    async def apply_status(self, *_: Any) -> dict[str, Any]:
        raise AssertionError("a held first status is not written")


class Recorded:
    def __init__(self) -> None:
        self.added: list[tuple[str, str, str]] = []

    def wants_context(self, key: tuple[str, str, str]) -> bool:
        return True

    def add(self, key: tuple[str, str, str], context: Any = None) -> None:
        self.added.append(key)


def meta(name: str, uid: str, **more: Any) -> dict[str, Any]:
    """Metadata of an object created just now (an old object's first status is never held)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "1", "generation": 1,
            "creationTimestamp": now, **more}  # fmt: skip


def serving() -> dict[str, Any]:
    refs = [{"kind": "ModelBooster", "name": "mb", "uid": "u-mb", "controller": True}]
    return {"metadata": meta("mb-main", "u-ms", labels={BOOSTER_MODEL_UID: "u-mb"}, ownerReferences=refs)}


def pod(name: str, phase: str = "Pending") -> dict[str, Any]:
    refs = [{"kind": "ModelServing", "name": "mb-main", "uid": "u-ms", "controller": True}]
    labels = {MS_NAME: "mb-main", BOOSTER_MANAGED_BY: BOOSTER_MANAGED_BY_VALUE, BOOSTER_MODEL_NAME: "mb"}
    return {
        "metadata": {
            **meta(name, f"u-{name}", labels=labels, ownerReferences=refs),
        },
        "status": {"phase": phase},
    }


def desired_set(errors: list[ConversionError] | None = None) -> DesiredSet:
    owner = OwnerKey(api_version="v1", kind="ModelBooster", resource="modelboosters", namespace="ns",
                     name="mb", uid="u-mb", generation=1)  # fmt: skip
    return DesiredSet(owner=owner, children=[], errors=errors or [])


def result(kind: str, name: str, uid: str, child_kind: str, child: str) -> ResultRecord:
    owner = OwnerKey(api_version="v1", kind=kind, resource=kind.lower() + "s", namespace="ns", name=name,
                     uid=uid, generation=1)  # fmt: skip
    created = ChildResult(api_version="v1", kind=child_kind, name=child, action="created")
    return ResultRecord.of(ApplyResult(owner=owner, ok=True, children=[created]))


def world() -> tuple[ObjectView, PipelineView, StatusReconciler, Recorded, Triggers]:
    """Status's views, reconciler and triggers as the service wires them (a 60 s first-write hold), the
    work queue recording what is queued."""
    view = ObjectView(None, [Resource.PODS, Resource.MODEL_SERVINGS, Resource.MODEL_BOOSTERS], pack=True)  # type: ignore[arg-type]
    pipeline = PipelineView(None)  # type: ignore[arg-type]
    reconciler = StatusReconciler(
        NoWrites(), pipeline, view,  # type: ignore[arg-type]
        first_write_hold=60.0, first_write_hold_max=120.0, requeue=lambda *_: None,
    )  # fmt: skip
    queue = Recorded()
    triggers = Triggers(view, queue, needs_reconcile=reconciler.needs_reconcile)  # type: ignore[arg-type]
    view.on_change(triggers.object_changed)
    triggers.start()
    return view, pipeline, reconciler, queue, triggers


def test_a_held_first_status_is_queued_again_only_once_a_change_releases_it() -> None:
    view, pipeline, reconciler, queue, triggers = world()

    async def reconcile(*keys: tuple[str, str, str]) -> None:
        for key in keys:
            await reconciler.reconcile(key, None)  # type: ignore[arg-type]

    view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, {"metadata": meta("mb", "u-mb")}))
    assert queue.added == [BOOSTER]
    assert reconciler.needs_reconcile(BOOSTER, "pods")  # not held yet: every change queues it
    queue.added.clear()
    asyncio.run(reconcile(BOOSTER))  # no apply result yet: held
    held_in = reconciler._held_in[BOOSTER]  # the trace of the reconcile that held it

    # held for its apply result: neither its children's changes nor its desired set release it
    view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_SERVINGS, serving()))
    assert queue.added == [SERVING]
    asyncio.run(reconcile(SERVING))  # held for its apply result too
    queue.added.clear()
    view.apply(ObjectEvent.from_object("ADDED", Resource.PODS, pod("mb-main-0")))
    pipeline._desired[BOOSTER] = DesiredRecord.of(desired_set())
    triggers.pipeline_changed(DESIRED_STREAM, BOOSTER, None)
    # their apply results arrive: each still waits for what it created to show in the view
    pipeline._results[BOOSTER] = result("ModelBooster", "mb", "u-mb", "ModelServing", "mb-main")
    pipeline._results[SERVING] = result("ModelServing", "mb-main", "u-ms", "Pod", "mb-main-1")
    triggers.pipeline_changed(RESULTS_STREAM, BOOSTER, None)
    triggers.pipeline_changed(RESULTS_STREAM, SERVING, None)
    view.apply(ObjectEvent.from_object("MODIFIED", Resource.PODS, pod("mb-main-0", phase="Running")))
    assert queue.added == []
    assert reconciler._held_in[BOOSTER] is held_in  # what its hold's end writes stays in that trace

    # the created pod shows: the ModelServing is released, and only it (a booster's pods never are)
    view.apply(ObjectEvent.from_object("ADDED", Resource.PODS, pod("mb-main-1")))
    assert queue.added == [SERVING]
    # the ModelServing's first status shows: the booster is released
    written = serving()
    written["status"] = {"replicas": 1}
    view.apply(ObjectEvent.from_object("MODIFIED", Resource.MODEL_SERVINGS, written))
    assert queue.added == [SERVING, SERVING, BOOSTER]
    assert BOOSTER not in reconciler._held_in


def test_a_failure_heard_while_held_is_queued_at_once() -> None:
    view, pipeline, reconciler, queue, triggers = world()
    view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, {"metadata": meta("mb", "u-mb")}))
    asyncio.run(reconciler.reconcile(BOOSTER, None))  # type: ignore[arg-type]
    queue.added.clear()
    assert not reconciler.needs_reconcile(BOOSTER, "modelservings")
    pipeline._desired[BOOSTER] = DesiredRecord.of(
        desired_set(errors=[ConversionError(field="spec", message="bad")])
    )
    triggers.pipeline_changed(DESIRED_STREAM, BOOSTER, None)
    assert queue.added == [BOOSTER]
