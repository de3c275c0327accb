"""Which API resources the watcher lists and watches."""

from __future__ import annotations

from dataclasses import dataclass

from ferry_schemas.bus import Resource
from ferry_schemas.labels import (
    GATEWAY_GROUP,
    INFERENCE_GROUP,
    LWS_GROUP,
    LWS_VERSION,
    MS_NAME,
    NETWORKING_GROUP,
    WORKLOAD_GROUP,
)
from ferry_schemas.models.provider import CREDENTIAL_LABEL


@dataclass(frozen=True)
class WatchedResource:
    """One resource type: where it lives in the API and how to select the objects Ferry cares about."""

    resource: Resource
    group: str
    version: str
    label_selector: str | None = None
    namespaced: bool = True

    @property
    def plural(self) -> str:
        return self.resource.value

    @property
    def core(self) -> bool:
        return self.group == ""

    def path(self, namespace: str | None) -> str:
        """The collection path, all namespaces when ``namespace`` is None (always for cluster scope)."""
        base = f"/api/{self.version}" if self.core else f"/apis/{self.group}/{self.version}"
        if namespace and self.namespaced:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


WATCHED: tuple[WatchedResource, ...] = (
    WatchedResource(Resource.MODEL_BOOSTERS, WORKLOAD_GROUP, "v1alpha1"),
    WatchedResource(Resource.MODEL_SERVINGS, WORKLOAD_GROUP, "v1alpha1"),
    WatchedResource(Resource.AUTOSCALING_POLICIES, WORKLOAD_GROUP, "v1alpha1"),
    WatchedResource(Resource.AUTOSCALING_POLICY_BINDINGS, WORKLOAD_GROUP, "v1alpha1"),
    WatchedResource(Resource.MODEL_SERVERS, NETWORKING_GROUP, "v1alpha1"),
    WatchedResource(Resource.MODEL_ROUTES, NETWORKING_GROUP, "v1alpha1"),
    WatchedResource(Resource.EXTERNAL_MODEL_PROVIDERS, NETWORKING_GROUP, "v1alpha1"),
    # only the Secrets their owners labelled as provider credentials (Kthena caches no others);
    # ferry_watcher.credentials publishes them without annotations (kubectl's last-applied copy)
    WatchedResource(Resource.CREDENTIALS, "", "v1", label_selector=f"{CREDENTIAL_LABEL}=true"),
    WatchedResource(Resource.POD_GROUPS, "scheduling.volcano.sh", "v1beta1"),
    # only where the LeaderWorkerSet CRD is installed (404 otherwise: nothing to publish)
    WatchedResource(Resource.LEADER_WORKER_SETS, LWS_GROUP, LWS_VERSION),
    # every pod; ferry_watcher.pods publishes only the ones Ferry selects
    WatchedResource(Resource.PODS, "", "v1"),
    # the rest of what the applier writes for a ModelServing: headless Services per role and the
    # template snapshot of every revision, so its view holds them and a change re-queues the owner
    WatchedResource(Resource.SERVICES, "", "v1", label_selector=MS_NAME),
    WatchedResource(Resource.CONTROLLER_REVISIONS, "apps", "v1", label_selector=MS_NAME),
)
"""Every kind Ferry reads or writes (design §2: the watcher publishes each of them)."""

GATEWAY_WATCHED: tuple[WatchedResource, ...] = (
    WatchedResource(Resource.GATEWAY_CLASSES, GATEWAY_GROUP, "v1", namespaced=False),
    WatchedResource(Resource.GATEWAYS, GATEWAY_GROUP, "v1"),
    WatchedResource(Resource.HTTP_ROUTES, GATEWAY_GROUP, "v1"),
    WatchedResource(Resource.REFERENCE_GRANTS, GATEWAY_GROUP, "v1beta1"),
    WatchedResource(Resource.INFERENCE_POOLS, INFERENCE_GROUP, "v1"),
)
"""Published only in gateway mode (``FERRY_GATEWAY_API``): Gateway API standard channel and the
Inference Extension's InferencePool."""


def watched_resources(gateway_mode: bool) -> tuple[WatchedResource, ...]:
    """In gateway mode every Service is published, not only ModelServing ones: an HTTPRoute may name
    any Service as a backend (Services are small and few next to pods; their pods are published only
    while an HTTPRoute names the Service, ``ferry_watcher.pods``)."""
    if not gateway_mode:
        return WATCHED
    every_service = WatchedResource(Resource.SERVICES, "", "v1")
    return tuple(every_service if w.resource == Resource.SERVICES else w for w in WATCHED) + GATEWAY_WATCHED
