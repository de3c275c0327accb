"""Where each child kind lives in the Kubernetes API (the applier's static discovery table)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KindInfo:
    """One namespaced kind: its apiVersion, plural resource and whether it is a core/apps type."""

    kind: str
    api_version: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def is_custom(self) -> bool:
        """Custom resources go through the custom-objects API; built-in kinds through typed APIs."""
        return self.group not in ("", "apps")


_WORKLOAD = "workload.serving.volcano.sh/v1alpha1"
_NETWORKING = "networking.serving.volcano.sh/v1alpha1"

KINDS: dict[str, KindInfo] = {
    info.kind: info
    for info in (
        KindInfo("ModelBooster", _WORKLOAD, "modelboosters"),
        KindInfo("ModelServing", _WORKLOAD, "modelservings"),
        KindInfo("AutoscalingPolicy", _WORKLOAD, "autoscalingpolicies"),
        KindInfo("AutoscalingPolicyBinding", _WORKLOAD, "autoscalingpolicybindings"),
        KindInfo("ModelServer", _NETWORKING, "modelservers"),
        KindInfo("ModelRoute", _NETWORKING, "modelroutes"),
        KindInfo("PodGroup", "scheduling.volcano.sh/v1beta1", "podgroups"),
        KindInfo("Pod", "v1", "pods"),
        KindInfo("Service", "v1", "services"),
        KindInfo("ControllerRevision", "apps/v1", "controllerrevisions"),
    )
}
_BY_PLURAL = {info.plural: info for info in KINDS.values()}


class UnknownKindError(ValueError):
    """A desired set names a kind the applier does not know how to write."""


def kind_info(name: str) -> KindInfo:
    """Look a kind up by its Kind (``ModelRoute``) or its plural resource (``modelroutes``)."""
    info = KINDS.get(name) or _BY_PLURAL.get(name.lower())
    if info is None:
        raise UnknownKindError(f"the applier cannot manage kind {name!r}; known kinds: {sorted(KINDS)}")
    return info


def kind_of(obj: dict[str, object]) -> KindInfo:
    """The table entry for a whole object, checking that its apiVersion matches."""
    kind = str(obj.get("kind") or "")
    info = kind_info(kind)
    api_version = str(obj.get("apiVersion") or "")
    if api_version != info.api_version:
        raise UnknownKindError(f"{kind} must have apiVersion {info.api_version!r}, got {api_version!r}")
    return info
