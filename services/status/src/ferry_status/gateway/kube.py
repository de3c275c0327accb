"""API calls of the Gateway controller: conditional ``/status`` merge patches and the defaults."""

from __future__ import annotations

from typing import Any

from ferry_schemas.bus import Resource
from ferry_schemas.labels import GATEWAY_GROUP, INFERENCE_GROUP
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
API: dict[str, tuple[str, str]] = {
    Resource.GATEWAY_CLASSES: (GATEWAY_GROUP, "v1"),
    Resource.GATEWAYS: (GATEWAY_GROUP, "v1"),
    Resource.HTTP_ROUTES: (GATEWAY_GROUP, "v1"),
    Resource.INFERENCE_POOLS: (INFERENCE_GROUP, "v1"),
}


class GatewayApi:
    def __init__(self, api: client.ApiClient, request_timeout: float = 30.0) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._timeout = request_timeout

    async def patch_status(self, resource: str, key: str, status: JSON, resource_version: str) -> None:
        """Replace ``status`` if the object is still at ``resource_version`` (409 otherwise)."""
        group, version = API[resource]
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        options: JSON = {"_content_type": MERGE_PATCH, "_request_timeout": self._timeout}
        if "/" not in key:
            await self._custom.patch_cluster_custom_object_status(
                group, version, resource, key, body, **options
            )
            return
        namespace, name = key.split("/", 1)
        await self._custom.patch_namespaced_custom_object_status(
            group, version, namespace, resource, name, body, **options
        )

    async def _create_if_missing(self, create: Any) -> None:
        try:
            await create
        except ApiException as exc:
            if exc.status != 409:  # 409: it exists, and then it is the user's to change
                raise

    async def ensure_gateway_class(self, name: str, controller_name: str) -> None:
        body = {
            "apiVersion": f"{GATEWAY_GROUP}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": name},
            "spec": {"controllerName": controller_name, "description": "Ferry's router (Kthena-compatible)"},
        }
        await self._create_if_missing(
            self._custom.create_cluster_custom_object(
                GATEWAY_GROUP, "v1", "gatewayclasses", body, _request_timeout=self._timeout
            )
        )

    async def ensure_default_gateway(self, namespace: str, class_name: str, port: int) -> None:
        body = {
            "apiVersion": f"{GATEWAY_GROUP}/v1",
            "kind": "Gateway",
            "metadata": {"name": "default", "namespace": namespace},
            "spec": {
                "gatewayClassName": class_name,
                "listeners": [
                    {
                        "name": "default",
                        "port": port,
                        "protocol": "HTTP",
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        }
        await self._create_if_missing(
            self._custom.create_namespaced_custom_object(
                GATEWAY_GROUP, "v1", namespace, "gateways", body, _request_timeout=self._timeout
            )
        )
