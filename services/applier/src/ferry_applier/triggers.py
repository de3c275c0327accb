"""Which owner an object message re-queues in the applier (the trigger's fields:
:mod:`ferry_schemas.object_trigger`). Pods are still decoded whole, once they are news: their events
are kept for the owner's recovery.
"""

from __future__ import annotations

from ferry_schemas import labels as L
from ferry_schemas.bus import Resource
from ferry_schemas.object_trigger import ObjectTrigger, decode_trigger

from ferry_applier.reconciler import OwnerRef, owner_resource

__all__ = ["ObjectTrigger", "decode_trigger", "owner_of"]


def owner_of(event: ObjectTrigger) -> OwnerRef | None:
    """The owner to re-queue when ``event``'s object changed: its controller reference, or, for a
    pod without one, the ModelServing its labels name."""
    meta = event.meta
    refs = meta.ownerReferences or []
    for ref in refs:
        if ref.controller and ref.name:
            return owner_resource(str(ref.kind or "")), event.namespace, str(ref.name)
    name = (meta.labels or {}).get(L.MS_NAME)
    if event.resource == Resource.PODS and name and not refs:
        return Resource.MODEL_SERVINGS.value, event.namespace, name
    return None
