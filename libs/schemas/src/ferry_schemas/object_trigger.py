"""What a consumer's object trigger reads of an object message: which object, its version, its
labels and controller references.

Every change of every viewed kind reaches the applier and status twice: their views decode the whole
:class:`~ferry_schemas.bus.ObjectEvent` (and keep the object), and their object consumers only need
the object's identity to re-queue what it affects. Validating the whole event (a ModelServing's is
several KB with its managedFields) a second time cost more than the rest of a trigger (7 % of the
status service's samples at 2000 boosters); msgspec decodes the fields below and skips the rest.
The event's other required fields are decoded too, so a message the full model refuses is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

__all__ = ["ObjectTrigger", "TriggerMeta", "decode_trigger"]


class TriggerOwnerReference(msgspec.Struct, frozen=True):
    kind: Any = None
    name: Any = None
    controller: Any = None


class TriggerMeta(msgspec.Struct, frozen=True):
    labels: dict[str, Any] | None = None
    ownerReferences: list[TriggerOwnerReference] | None = None


class _Object(msgspec.Struct, frozen=True):
    metadata: TriggerMeta | None = None


class ObjectTrigger(msgspec.Struct, frozen=True, rename="camel"):
    """The fields of an :class:`~ferry_schemas.bus.ObjectEvent` a trigger reads."""

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

    @property
    def meta(self) -> TriggerMeta:
        return self.object.metadata or TriggerMeta()


_DECODER = msgspec.json.Decoder(ObjectTrigger)


def decode_trigger(data: bytes) -> ObjectTrigger:
    """The trigger fields of an object message; :class:`msgspec.DecodeError` if it is not one."""
    return _DECODER.decode(data)
