"""A reconcile's own group objects: created once, even before the view has heard of them.

``WorkloadEngine._sync_group_objects`` runs after the plan's actions in the same reconcile; a
group those actions just created is often not in the view yet, and was POSTed a second time (a
409, an apply, an ownership fold: 0.25 requests per booster under kubectl's serial creates).
"""

from __future__ import annotations

from typing import cast

from ferry_applier.kube import KubeClient, Obj
from ferry_applier.workload.engine import Made, WorkloadEngine
from ferry_applier.workload.plan import Revision
from ferry_applier.workload.spec import WorkloadSpec
from ferry_applier.workload.state import GroupState
from ferry_schemas import labels as L
from ferry_schemas.bus import OwnerKey, Resource
from ferry_schemas.runtime.view import ObjectView

OWNER = OwnerKey(
    api_version="workload.serving.volcano.sh/v1alpha1",
    kind="ModelServing",
    resource=Resource.MODEL_SERVINGS,
    namespace="ns",
    name="ms",
    uid="uid-ms",
)


class RecordingKube:
    """What the engine writes, by method (the API server is not reached)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def create_or_apply(self, obj: Obj) -> Obj:
        self.calls.append(("create_or_apply", obj["metadata"]["name"]))
        return obj

    async def apply(self, obj: Obj) -> Obj:
        self.calls.append(("apply", obj["metadata"]["name"]))
        return obj


def service(port: int = 8000) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "ms-0-leader-0-0",
            "labels": {L.MS_NAME: "ms", L.MS_GROUP_NAME: "ms-0"},
            "ownerReferences": [OWNER.owner_reference()],
        },
        "spec": {"clusterIP": "None", "ports": [{"port": port}]},
    }


async def sync(made: Made, rendered: Obj) -> list[tuple[str, str]]:
    kube = RecordingKube()
    view = ObjectView(None, [Resource.SERVICES, Resource.POD_GROUPS])  # type: ignore[arg-type]
    engine = WorkloadEngine(cast(KubeClient, kube), view, lambda *_: [], lambda *_: WorkloadSpec(1, ()))
    await engine._sync_group_objects(
        OWNER,
        [GroupState(0, planned_revision="new")],
        Revision("new", WorkloadSpec(1, ())),
        lambda revision, ordinal: [rendered],
        made,
    )
    return kube.calls


async def test_a_group_object_this_reconcile_created_is_not_posted_again() -> None:
    created = service()
    created["metadata"]["namespace"] = "ns"
    assert await sync({("Service", "ms-0-leader-0-0"): created}, service()) == []


async def test_one_the_view_does_not_show_and_no_action_created_is_created() -> None:
    assert await sync({}, service()) == [("create_or_apply", "ms-0-leader-0-0")]


async def test_one_created_from_another_rendering_is_applied_not_posted() -> None:
    assert await sync({("Service", "ms-0-leader-0-0"): service(port=9000)}, service()) == [
        ("apply", "ms-0-leader-0-0")
    ]
