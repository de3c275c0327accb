"""LeaderWorkerSet status from the ModelServing it is served as (``spec/serving.md`` §6.10)."""

from __future__ import annotations

from typing import Any

from ferry_schemas.workload import LWS_NAME, LWS_WORKER_INDEX

JSON = dict[str, Any]


def serving_of(lws: JSON, servings: list[JSON]) -> JSON | None:
    """The ModelServing named like ``lws`` whose controller reference is ``lws`` (by uid)."""
    meta = lws.get("metadata") or {}
    for serving in servings:
        serving_meta = serving.get("metadata") or {}
        if serving_meta.get("name") != meta.get("name"):
            continue
        refs = serving_meta.get("ownerReferences") or []
        if any(ref.get("uid") == meta.get("uid") and ref.get("controller") for ref in refs):
            return serving
    return None


def compute_lws_status(lws: JSON, serving: JSON | None) -> JSON:
    """Kthena's mapping: ``replicas`` and ``readyReplicas`` (the ModelServing's available groups),
    plus what the LWS API has and Kthena leaves unset: ``updatedReplicas`` and ``hpaPodSelector``
    (the leaders, as the LWS controller sets it), so the LWS scale subresource works."""
    status = (serving or {}).get("status") or {}
    name = (lws.get("metadata") or {}).get("name") or ""
    return {
        "replicas": int(status.get("replicas") or 0),
        "readyReplicas": int(status.get("availableReplicas") or 0),
        "updatedReplicas": int(status.get("updatedReplicas") or 0),
        "hpaPodSelector": f"{LWS_NAME}={name},{LWS_WORKER_INDEX}=0",
    }
