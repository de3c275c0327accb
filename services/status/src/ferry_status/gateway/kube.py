"""API calls of the Gateway controller: conditional ``/status`` merge patches and the defaults."""

from __future__ import annotations

from typing import Any

from ferry_schemas.bus import Resource
from ferry_schemas.labels import GATEWAY_GROUP, INFERENCE_GROUP
from ferry_schemas.runtime.kubeconn import MERGE_PATCH, ApiError, KubeConnection, object_path

JSON = dict[str, Any]
API: dict[str, tuple[str, str]] = {
    Resource.GATEWAY_CLASSES: (GATEWAY_GROUP, "v1"),
    Resource.GATEWAYS: (GATEWAY_GROUP, "v1"),
    Resource.HTTP_ROUTES: (GATEWAY_GROUP, "v1"),
    Resource.INFERENCE_POOLS: (INFERENCE_GROUP, "v1"),
}


class GatewayApi:
    def __init__(self, api: KubeConnection, request_timeout: float = 30.0) -> None:
        self._api = api
        self._timeout = request_timeout

    async def patch_status(self, resource: str, key: str, status: JSON, resource_version: str) -> None:
        """Replace ``status`` if the object is still at ``resource_version`` (409 otherwise)."""
        group, version = API[resource]
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        namespace, _, name = key.rpartition("/")
        path = object_path(group, version, resource, namespace, name, "status")
        await self._api.send("PATCH", path, body, content_type=MERGE_PATCH, limits=self._timeout)

    async def _create_if_missing(self, path: str, body: JSON) -> None:
        try:
            await self._api.send("POST", path, body, limits=self._timeout)
        except ApiError as exc:
            if exc.status != 409:  # 409: it exists, and then it is the user's to change
                raise

    async def ensure_gateway_class(self, name: str, controller_name: str) -> None:
        body = {
            "apiVersion": f"{GATEWAY_GROUP}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": name},
            "spec": {"controllerName": controller_name, "description": "Ferry's router (Kthena-compatible)"},
        }
        await self._create_if_missing(object_path(GATEWAY_GROUP, "v1", "gatewayclasses"), body)

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
        await self._create_if_missing(object_path(GATEWAY_GROUP, "v1", "gateways", namespace), body)
