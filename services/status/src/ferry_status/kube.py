"""The one API call the status service makes: server-side apply of ``/status`` (reads come from the view)."""

from __future__ import annotations

from typing import Any

from ferry_schemas.bus import Resource
from ferry_schemas.labels import LWS_GROUP, LWS_VERSION, WORKLOAD_GROUP
from ferry_schemas.models.route import NETWORKING_GROUP
from ferry_schemas.runtime.kubeconn import KubeConnection, object_path

JSON = dict[str, Any]
FIELD_MANAGER = "ferry-status"
VERSION = "v1alpha1"
KINDS = {
    Resource.MODEL_SERVINGS.value: "ModelServing",
    Resource.MODEL_BOOSTERS.value: "ModelBooster",
    Resource.LEADER_WORKER_SETS.value: "LeaderWorkerSet",
    Resource.EXTERNAL_MODEL_PROVIDERS.value: "ExternalModelProvider",
}
GROUP_VERSIONS = {
    Resource.LEADER_WORKER_SETS.value: (LWS_GROUP, LWS_VERSION),
    Resource.EXTERNAL_MODEL_PROVIDERS.value: (NETWORKING_GROUP, VERSION),
}
"""Kinds outside Ferry's workload group whose status Ferry writes: plural → (group, version)."""


def group_version(plural: str) -> tuple[str, str]:
    return GROUP_VERSIONS.get(plural, (WORKLOAD_GROUP, VERSION))


class StatusApi:
    """Writes ``/status`` with SSA (field manager ``ferry-status``)."""

    def __init__(self, api: KubeConnection, request_timeout: float = 30.0) -> None:
        self._api = api
        self._timeout = request_timeout

    async def apply_status(self, plural: str, namespace: str, name: str, status: JSON) -> JSON:
        group, version = group_version(plural)
        body = {
            "apiVersion": f"{group}/{version}",
            "kind": KINDS[plural],
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        path = object_path(group, version, plural, namespace, name, "status")
        return await self._api.apply(path, body, FIELD_MANAGER, limits=self._timeout)
