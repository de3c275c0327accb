"""The Kubernetes kinds Ferry serves and writes (design §1), as pydantic models.

Load with ``Kind.model_validate(obj)``, write with ``obj.to_wire()``
(``model_dump(mode="json", by_alias=True, exclude_none=True)``).
"""

from __future__ import annotations

from .autoscaling import (
    AutoscalingMetric,
    AutoscalingPolicy,
    AutoscalingPolicyBinding,
    AutoscalingPolicyBindingSpec,
    AutoscalingPolicyBindingStatus,
    AutoscalingPolicySpec,
    AutoscalingPolicyStatus,
    Behavior,
    BoosterAutoscalingPolicy,
    DisaggregatedTarget,
    HeterogeneousParam,
    HeterogeneousTarget,
    HomogeneousTarget,
    MetricSource,
    PolicyRef,
    RoleScaling,
    ScalingPolicy,
    ScalingTarget,
)
from .booster import (
    BackendStatus,
    LoraAdapter,
    ModelBackend,
    ModelBooster,
    ModelBoosterSpec,
    ModelBoosterStatus,
    ModelWorker,
)
from .meta import Condition, KubeModel, KubeObject, ObjectMeta, OwnerReference
from .podgroup import PodGroup, PodGroupSpec, PodGroupStatus, SubGroupPolicy
from .provider import ExternalModelProvider, ExternalModelProviderSpec, ExternalModelProviderStatus
from .route import (
    BodyMatch,
    ModelMatch,
    ModelRoute,
    ModelRouteSpec,
    ModelRouteStatus,
    ParentReference,
    RateLimit,
    Rule,
    StringMatch,
    TargetModel,
)
from .server import KVConnector, ModelServer, ModelServerSpec, ModelServerStatus, PDGroup, WorkloadSelector
from .serving import (
    GangPolicy,
    ModelServing,
    ModelServingSpec,
    ModelServingStatus,
    NetworkTopology,
    NetworkTopologySpec,
    PluginSpec,
    Role,
    RolloutStrategy,
    ServingGroup,
)

KINDS: tuple[type[KubeObject], ...] = (
    ModelBooster,
    ModelServing,
    ModelServer,
    ModelRoute,
    ExternalModelProvider,
    AutoscalingPolicy,
    AutoscalingPolicyBinding,
    PodGroup,
)
"""Every kind, in the order their CRDs are generated."""

KIND_BY_NAME: dict[str, type[KubeObject]] = {kind.KIND: kind for kind in KINDS}


def load_object(obj: dict[str, object]) -> KubeObject:
    """Parse a wire object of any Ferry kind by its ``kind`` (``KeyError`` for other kinds)."""
    return KIND_BY_NAME[str(obj.get("kind"))].model_validate(obj)


__all__ = [
    "KINDS",
    "KIND_BY_NAME",
    "AutoscalingMetric",
    "AutoscalingPolicy",
    "AutoscalingPolicyBinding",
    "AutoscalingPolicyBindingSpec",
    "AutoscalingPolicyBindingStatus",
    "AutoscalingPolicySpec",
    "AutoscalingPolicyStatus",
    "BackendStatus",
    "Behavior",
    "BodyMatch",
    "BoosterAutoscalingPolicy",
    "Condition",
    "DisaggregatedTarget",
    "ExternalModelProvider",
    "ExternalModelProviderSpec",
    "ExternalModelProviderStatus",
    "GangPolicy",
    "HeterogeneousParam",
    "HeterogeneousTarget",
    "HomogeneousTarget",
    "KVConnector",
    "KubeModel",
    "KubeObject",
    "LoraAdapter",
    "MetricSource",
    "ModelBackend",
    "ModelBooster",
    "ModelBoosterSpec",
    "ModelBoosterStatus",
    "ModelMatch",
    "ModelRoute",
    "ModelRouteSpec",
    "ModelRouteStatus",
    "ModelServer",
    "ModelServerSpec",
    "ModelServerStatus",
    "ModelServing",
    "ModelServingSpec",
    "ModelServingStatus",
    "ModelWorker",
    "NetworkTopology",
    "NetworkTopologySpec",
    "ObjectMeta",
    "OwnerReference",
    "PDGroup",
    "ParentReference",
    "PluginSpec",
    "PodGroup",
    "PodGroupSpec",
    "PodGroupStatus",
    "PolicyRef",
    "RateLimit",
    "Role",
    "RoleScaling",
    "RolloutStrategy",
    "Rule",
    "ScalingPolicy",
    "ScalingTarget",
    "ServingGroup",
    "StringMatch",
    "SubGroupPolicy",
    "TargetModel",
    "WorkloadSelector",
    "load_object",
]
