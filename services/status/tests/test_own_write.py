"""A status write coming back as a change of its object does not reconcile that object again."""

import asyncio
from typing import Any

from ferry_schemas.bus import ObjectEvent, Resource
from ferry_schemas.runtime.view import ObjectView
from ferry_status.bus_state import PipelineView
from ferry_status.reconciler import StatusReconciler


class RecordingApi:
    """Stands in for the API server's /status apply: stores the status at the next resourceVersion."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, str]] = []

    async def apply_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.writes.append((plural, namespace, name))
        return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "42"}, "status": status}


def booster() -> dict[str, Any]:
    return {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelBooster",
        "metadata": {
            "name": "mb", "namespace": "ns", "uid": "u1", "generation": 1, "resourceVersion": "41",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"backend": {"name": "b", "type": "vLLM"}},
    }  # fmt: skip


def trigger(event_type: str, resource_version: str, uid: str = "u1") -> ObjectEvent:
    obj = booster()
    obj["metadata"].update(resourceVersion=resource_version, uid=uid)
    return ObjectEvent.from_object(event_type, Resource.MODEL_BOOSTERS, obj)  # type: ignore[arg-type]


def test_only_the_change_our_write_made_is_our_own() -> None:
    view = ObjectView(None, [Resource.MODEL_BOOSTERS, Resource.MODEL_SERVINGS], pack=True)  # type: ignore[arg-type]
    view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, booster()))
    api = RecordingApi()
    reconciler = StatusReconciler(api, PipelineView(None), view)  # type: ignore[arg-type]
    assert not reconciler.own_write(trigger("MODIFIED", "42"))  # nothing written yet

    asyncio.run(reconciler.reconcile(("modelboosters", "ns", "mb"), None))

    assert api.writes == [("modelboosters", "ns", "mb")]
    assert reconciler.own_write(trigger("MODIFIED", "42"))
    assert not reconciler.own_write(trigger("MODIFIED", "43"))  # someone's change after ours
    assert not reconciler.own_write(trigger("MODIFIED", "41"))  # the change before it
    assert not reconciler.own_write(trigger("DELETED", "42"))
    assert not reconciler.own_write(trigger("MODIFIED", "42", uid="u2"))  # a new object of that name
