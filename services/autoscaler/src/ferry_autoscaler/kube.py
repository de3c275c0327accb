"""The autoscaler's API calls: ``/scale`` writes, role replica patches, policy status, Events.

``spec.replicas`` is written through the ModelServing's ``scale`` subresource (as HPA and KEDA do)
with field manager ``ferry-autoscaler``, so the field's owner is visible in ``managedFields`` and the
applier, which hands the field over to this manager for autoscaled ModelServings, never resets it.
Role replicas are not exposed by ``scale``: they are written with one JSON patch that ``test``s each
role's name at its index before ``add``ing its replicas (Kthena's patch, spec §5).
"""

from __future__ import annotations

from typing import Any

from ferry_schemas.autoscaling import REPLICAS_MANAGER
from ferry_schemas.bus import Resource
from ferry_schemas.labels import WORKLOAD_GROUP
from kubernetes_asyncio import client

from ferry_autoscaler.policies import Owner, ServingRef

JSON = dict[str, Any]
VERSION = "v1alpha1"
COMPONENT = "ferry-autoscaler"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


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


class AutoscalerApi:
    def __init__(self, api: client.ApiClient, timeout: float = 10.0) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._timeout = timeout

    def _options(self, content_type: str) -> JSON:
        # _content_type goes through **kwargs (the stubs do not list it); without it a dict body is
        # sent as a JSON patch (ecosystem notes §3.4)
        return {"_content_type": content_type, "_request_timeout": self._timeout}

    async def close(self) -> None:
        await self._api.close()

    async def scale(self, ref: ServingRef, replicas: int) -> None:
        await self._custom.patch_namespaced_custom_object_scale(
            WORKLOAD_GROUP, VERSION, ref.namespace, Resource.MODEL_SERVINGS.value, ref.name,
            {"spec": {"replicas": replicas}},
            field_manager=REPLICAS_MANAGER, **self._options(MERGE_PATCH),
        )  # fmt: skip

    async def read_scale(self, ref: ServingRef) -> int:
        scale = await self._custom.get_namespaced_custom_object_scale(
            WORKLOAD_GROUP, VERSION, ref.namespace, Resource.MODEL_SERVINGS.value, ref.name,
            _request_timeout=self._timeout,
        )  # fmt: skip
        return int(((scale or {}).get("spec") or {}).get("replicas") or 0)

    async def patch_roles(self, ref: ServingRef, serving: JSON, roles: dict[str, int]) -> None:
        ops = role_patch(serving, roles)
        if not ops:
            return
        await self._custom.patch_namespaced_custom_object(
            WORKLOAD_GROUP, VERSION, ref.namespace, Resource.MODEL_SERVINGS.value, ref.name, ops,
            field_manager=REPLICAS_MANAGER, **self._options(JSON_PATCH),
        )  # fmt: skip

    async def get_serving(self, ref: ServingRef) -> JSON:
        obj: JSON = await self._custom.get_namespaced_custom_object(
            WORKLOAD_GROUP, VERSION, ref.namespace, Resource.MODEL_SERVINGS.value, ref.name,
            _request_timeout=self._timeout,
        )  # fmt: skip
        return obj

    async def apply_status(self, owner: Owner, status: JSON) -> None:
        body = {
            "apiVersion": f"{WORKLOAD_GROUP}/{VERSION}",
            "kind": owner.kind,
            "metadata": {"name": owner.name, "namespace": owner.namespace},
            "status": status,
        }
        await self._custom.patch_namespaced_custom_object_status(
            WORKLOAD_GROUP, VERSION, owner.namespace, owner.resource, owner.name, body,
            field_manager=COMPONENT, force=True, **self._options(APPLY_PATCH),
        )  # fmt: skip
