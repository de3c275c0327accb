"""ObjectEvent → DesiredSet: the converter's whole job, as one pure function."""

from __future__ import annotations

from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.bus import ConversionError, DesiredSet, ObjectEvent, OwnerKey, Resource
from ferry_schemas.models import ModelBooster, ModelServing
from pydantic import ValidationError

from ferry_converter import lws
from ferry_converter.booster import convert as booster
from ferry_converter.booster.options import RenderOptions
from ferry_converter.serving import convert as serving

KINDS: dict[str, tuple[str, type[ModelBooster] | type[ModelServing]]] = {
    Resource.MODEL_BOOSTERS: ("ModelBooster", ModelBooster),
    Resource.MODEL_SERVINGS: ("ModelServing", ModelServing),
}


def owner_key(event: ObjectEvent) -> OwnerKey:
    if event.resource == Resource.LEADER_WORKER_SETS:
        kind, default_api_version = "LeaderWorkerSet", L.LWS_API_VERSION
    else:
        kind, default_api_version = KINDS[event.resource][0], L.WORKLOAD_API_VERSION
    meta = event.object.get("metadata") or {}
    generation = event.generation if event.generation is not None else meta.get("generation")
    return OwnerKey(
        api_version=str(event.object.get("apiVersion") or default_api_version),
        kind=kind,
        resource=event.resource,
        namespace=event.namespace,
        name=event.name,
        uid=event.uid or str(meta.get("uid") or ""),
        generation=int(generation or 0),
        # resource_version stays empty: it changes on every status write, and the msg id
        # (content hash) must only change when the desired content does.
    )


def schema_errors(exc: ValidationError) -> list[ConversionError]:
    """Pydantic errors as field paths (``spec.backend.workers[0].replicas``) and messages."""
    errors: list[ConversionError] = []
    for item in exc.errors():
        path = ""
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        errors.append(ConversionError(field=path or "spec", message=item["msg"], reason="InvalidSpec"))
    return errors


def _base(owner: OwnerKey) -> dict[str, Any]:
    if owner.kind == "LeaderWorkerSet":
        # one child named like the owner: nothing to prune, deletion cascades by ownerReference
        return {"managed_kinds": list(lws.MANAGED_KINDS)}
    if owner.kind == "ModelBooster":
        return {
            "managed_kinds": list(booster.MANAGED_KINDS),
            "owner_selector": {
                L.BOOSTER_MANAGED_BY: L.BOOSTER_MANAGED_BY_VALUE,
                L.BOOSTER_MODEL_UID: owner.uid,
            },
        }
    return {
        "managed_kinds": list(serving.MANAGED_KINDS),
        "owner_selector": serving.owner_selector(owner.name),
    }


def desired_set(event: ObjectEvent, options: RenderOptions | None = None) -> DesiredSet:
    """The complete desired set for one owner event (a tombstone when the owner was deleted).

    Never raises for any object content: failures come back in ``errors`` with no children.
    """
    owner = owner_key(event)
    base = _base(owner)
    if event.deleted:
        return DesiredSet(owner=owner, deleted=True, **base)
    if owner.kind == "LeaderWorkerSet":
        children, errors = lws.convert_lws(event.object)
        return DesiredSet(owner=owner, children=children, errors=errors, **base)
    _, model = KINDS[event.resource]
    try:  # status is not the converter's business: a malformed status must not block conversion
        model.model_validate({key: value for key, value in event.object.items() if key != "status"})
    except ValidationError as exc:
        return DesiredSet(owner=owner, errors=schema_errors(exc), **base)
    if owner.kind == "ModelBooster":
        result = booster.convert_booster(event.object, options)
        return DesiredSet(owner=owner, children=result.children, errors=result.errors, **base)
    workload, errors = serving.convert_serving(event.object)
    return DesiredSet(owner=owner, workload=workload, errors=errors, **base)
