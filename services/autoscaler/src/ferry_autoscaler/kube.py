"""The autoscaler's API calls: ``/scale`` writes, role replica patches, policy status, Events.

``spec.replicas`` is written through the ModelServing's ``scale`` subresource (as HPA and KEDA do)
with field manager ``ferry-autoscaler``, so the field's owner is visible in ``managedFields`` and the
applier, which hands the field over to this manager for autoscaled ModelServings, never resets it.
Role replicas are not exposed by ``scale``: they are written with one JSON patch that ``test``s each
role's name at its index before ``add``ing its replicas (Kthena's patch, spec §5).
"""

from __future__ import annotations

import json
from typing import Any

from ferry_schemas.autoscaling import REPLICAS_MANAGER
from ferry_schemas.bus import Resource
from ferry_schemas.labels import WORKLOAD_GROUP
from ferry_schemas.runtime.kubeconn import MERGE_PATCH, KubeConnection, object_path

from ferry_autoscaler.policies import Owner, ServingRef

JSON = dict[str, Any]
VERSION = "v1alpha1"
COMPONENT = "ferry-autoscaler"
JSON_PATCH = "application/json-patch+json"


def role_patch(serving: JSON, roles: dict[str, int]) -> list[JSON]:
    """``test`` + ``add`` per changed role at its index (``add`` creates a missing ``replicas``)."""
    ops: list[JSON] = []
    template_roles = ((serving.get("spec") or {}).get("template") or {}).get("roles") or []
    for index, role in enumerate(template_roles):
        name = role.get("name")
        if name in roles:
            ops.append({"op": "test", "path": f"/spec/template/roles/{index}/name", "value": name})
            ops.append({"op": "add", "path": f"/spec/template/roles/{index}/replicas", "value": roles[name]})
    return ops


def serving_path(ref: ServingRef, subresource: str = "") -> str:
    return object_path(
        WORKLOAD_GROUP, VERSION, Resource.MODEL_SERVINGS.value, ref.namespace, ref.name, subresource
    )


class AutoscalerApi:
    """Over the lean :class:`~ferry_schemas.runtime.kubeconn.KubeConnection` (raw REST, plain dicts)."""

    def __init__(self, api: KubeConnection, timeout: float = 10.0) -> None:
        self._api = api
        self._timeout = timeout

    async def close(self) -> None:
        await self._api.close()

    async def scale(self, ref: ServingRef, replicas: int) -> None:
        await self._api.send(
            "PATCH", serving_path(ref, "scale"), {"spec": {"replicas": replicas}},
            query=[("fieldManager", REPLICAS_MANAGER)], content_type=MERGE_PATCH, limits=self._timeout,
        )  # fmt: skip

    async def read_scale(self, ref: ServingRef) -> int:
        scale = await self._api.send("GET", serving_path(ref, "scale"), limits=self._timeout)
        return int((scale.get("spec") or {}).get("replicas") or 0)

    async def patch_roles(self, ref: ServingRef, serving: JSON, roles: dict[str, int]) -> None:
        ops = role_patch(serving, roles)
        if not ops:
            return
        payload = json.dumps(ops).encode()
        resp = await self._api.request(
            "PATCH", serving_path(ref), [("fieldManager", REPLICAS_MANAGER)],
            body=payload, content_type=JSON_PATCH, limits=self._timeout,
        )  # fmt: skip
        resp.release()

    async def get_serving(self, ref: ServingRef) -> JSON:
        return await self._api.send("GET", serving_path(ref), limits=self._timeout)

    async def apply_status(self, owner: Owner, status: JSON) -> None:
        body = {
            "apiVersion": f"{WORKLOAD_GROUP}/{VERSION}",
            "kind": owner.kind,
            "metadata": {"name": owner.name, "namespace": owner.namespace},
            "status": status,
        }
        path = object_path(WORKLOAD_GROUP, VERSION, owner.resource, owner.namespace, owner.name, "status")
        await self._api.apply(path, body, COMPONENT, limits=self._timeout)
