"""Which owner a change of an object re-queues in the applier (the view's change callback hands it
the event the view decoded: nothing is decoded twice)."""

from __future__ import annotations

from ferry_schemas import labels as L
from ferry_schemas.bus import ObjectEvent, Resource

from ferry_applier.reconciler import OwnerRef, owner_resource


def owner_of(event: ObjectEvent) -> OwnerRef | None:
    """The owner to re-queue when ``event``'s object changed: its controller reference, or, for a
    pod without one, the ModelServing its labels name."""
    meta = event.object.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    for ref in refs:
        if ref.get("controller") and ref.get("name"):
            return owner_resource(str(ref.get("kind") or "")), event.namespace, str(ref["name"])
    name = (meta.get("labels") or {}).get(L.MS_NAME)
    if event.resource == Resource.PODS and name and not refs:
        return Resource.MODEL_SERVINGS.value, event.namespace, name
    return None
