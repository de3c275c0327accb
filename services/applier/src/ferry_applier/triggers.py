"""What the applier's object trigger reads of an object message: which object, and whose it is.

Every change of every viewed kind reaches the applier twice: its view decodes the whole
:class:`~ferry_schemas.bus.ObjectEvent` (and keeps the object), and the ``applier-objects``
consumer only needs the object's identity, its resourceVersion and its controller (reference or
ModelServing label) to re-queue the owner. Validating the whole event (a ModelServing's is several
KB with its managedFields) a second time for that cost more than the rest of the trigger; msgspec
decodes the fields below and skips the rest. Pods are still decoded whole, once they are news:
their events are kept for the owner's recovery.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from ferry_schemas import labels as L
from ferry_schemas.bus import Resource

from ferry_applier.reconciler import OwnerRef, owner_resource


class _OwnerReference(msgspec.Struct, frozen=True):
    kind: Any = None
    name: Any = None
    controller: Any = None


class _Meta(msgspec.Struct, frozen=True):
    labels: dict[str, Any] | None = None
    ownerReferences: list[_OwnerReference] | None = None


class _Object(msgspec.Struct, frozen=True):
    metadata: _Meta | None = None


class ObjectTrigger(msgspec.Struct, frozen=True, rename="camel"):
    """The fields of an :class:`~ferry_schemas.bus.ObjectEvent` a trigger reads; the event's other
    required fields are decoded too, so a message the full model refuses is refused here."""

    type: Literal["ADDED", "MODIFIED", "DELETED", "SYNC"]
    resource: str
    namespace: str
    name: str
    uid: str
    resource_version: str
    object: _Object
    generation: int | None = None
    observed_at: datetime | None = None

    @property
    def deleted(self) -> bool:
        return self.type == "DELETED"


TRIGGER = msgspec.json.Decoder(ObjectTrigger)


def decode_trigger(data: bytes) -> ObjectTrigger:
    """The trigger fields of an object message; :class:`msgspec.DecodeError` if it is not one."""
    return TRIGGER.decode(data)


def owner_of(event: ObjectTrigger) -> OwnerRef | None:
    """The owner to re-queue when ``event``'s object changed: its controller reference, or, for a
    pod without one, the ModelServing its labels name."""
    meta = event.object.metadata or _Meta()
    refs = meta.ownerReferences or []
    for ref in refs:
        if ref.controller and ref.name:
            return owner_resource(str(ref.kind or "")), event.namespace, str(ref.name)
    name = (meta.labels or {}).get(L.MS_NAME)
    if event.resource == Resource.PODS and name and not refs:
        return Resource.MODEL_SERVINGS.value, event.namespace, name
    return None
