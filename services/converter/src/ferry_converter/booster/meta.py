"""Metadata every booster child carries: names, the five labels, the owner reference (§3.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.bus import OwnerKey, Resource, content_hash


@dataclass(frozen=True)
class BoosterRef:
    """The parts of the owning ModelBooster that children are stamped with."""

    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> dict[str, Any]:
        owner = OwnerKey(
            api_version=L.WORKLOAD_API_VERSION,
            kind="ModelBooster",
            resource=Resource.MODEL_BOOSTERS,
            namespace=self.namespace,
            name=self.name,
            uid=self.uid,
        )
        return owner.owner_reference()

    def labels(self, backend: str) -> dict[str, str]:
        """The four stable labels (``revision`` is added by :func:`stamp_revision`)."""
        return {
            L.BOOSTER_MODEL_NAME: self.name,
            L.BOOSTER_BACKEND_NAME: backend,
            L.BOOSTER_MANAGED_BY: L.BOOSTER_MANAGED_BY_VALUE,
            L.BOOSTER_MODEL_UID: self.uid,
        }

    def selector(self) -> dict[str, str]:
        """What the applier lists (and prunes) this booster's children by."""
        return {L.BOOSTER_MANAGED_BY: L.BOOSTER_MANAGED_BY_VALUE, L.BOOSTER_MODEL_UID: self.uid}


def child(
    api_version: str, kind: str, name: str, ref: BoosterRef, backend: str, spec: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": ref.namespace,
            "labels": ref.labels(backend),
            "ownerReferences": [ref.owner_reference()],
        },
        "spec": spec,
    }


def revision_of(value: Any) -> str:
    """Ferry's revision label: a stable hash of what the child renders to (not Kthena's go-spew FNV)."""
    return content_hash(value, length=10)


def stamp_revision(obj: dict[str, Any], revision: str) -> None:
    obj["metadata"]["labels"][L.BOOSTER_REVISION] = revision
