"""AutoscalingPolicy and AutoscalingPolicyBinding (``workload.serving.volcano.sh/v1alpha1``).

A superset of the Kthena generations: the seed-era policy (``metrics[].metricName``) with a separate
Binding (``scalingConfiguration``/``optimizerConfiguration`` in v0.1.0,
``homogeneousTarget``/``heterogeneousTarget`` in v0.4.0), and the current policy that carries its
targets itself (``homogeneousTarget``/``heterogeneousTarget``/``disaggregatedTarget``, ``metrics[].name``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from .meta import (
    CONDITIONS_LIST,
    FREE_FORM,
    QUANTITY_PATTERN,
    Condition,
    IntOrString,
    KubeModel,
    KubeObject,
    cel,
    crd_default,
    replace_schema,
    validations,
)

WORKLOAD_GROUP = "workload.serving.volcano.sh"
MAX_REPLICAS = 1_000_000

QUANTITY: dict[str, Any] = {"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN, "maxLength": 64}
"""A quantity; the length bound keeps the CEL rules that parse it within the API server's cost budget."""
OBJECT_REFERENCE: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-map-type": "atomic",
    "properties": {
        key: {"type": "string"}
        for key in ("apiVersion", "fieldPath", "kind", "name", "namespace", "resourceVersion", "uid")
    },
}
LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-map-type": "atomic",
    "properties": {
        "matchExpressions": {
            "type": "array",
            "x-kubernetes-list-type": "atomic",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {
                        "type": "array",
                        "x-kubernetes-list-type": "atomic",
                        "items": {"type": "string"},
                    },
                },
            },
        },
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _metric_name(var: str) -> str:
    """CEL: a metric item's name, whichever generation's key it uses."""
    return f"(has({var}.name) ? {var}.name : {var}.metricName)"


def _as_float(expr: str) -> str:
    """CEL: an int-or-string quantity as a double."""
    return f"quantity(string({expr})).asApproximateFloat()"


def _unique_metrics() -> dict[str, Any]:
    """The list's metric names are unique (Kthena's webhook: "duplicate metric name")."""
    return validations(
        cel(
            f"self.all(m, self.exists_one(n, {_metric_name('n')} == {_metric_name('m')}))",
            "duplicate metric name: every metric may be listed once",
        )
    )


class AutoscalingMetric(KubeModel):
    """One metric and its per-instance target; ``name`` (current) or ``metricName`` (seed era)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.name) != has(self.metricName)", "exactly one of name or metricName must be set"),
            cel(
                f"{_as_float('self.targetValue')} > 0.0",
                "targetValue must be greater than 0",
                field_path=".targetValue",
            ),
        )
    )

    name: str | None = Field(None, min_length=1, max_length=253)
    metric_name: str | None = Field(None, min_length=1, max_length=253)
    target_value: IntOrString = Field(json_schema_extra=replace_schema(QUANTITY))
    """Target value per instance (a Kubernetes quantity)."""


DURATION_PATTERN = r"^(0|([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$"
MAX_BEHAVIOR_DURATION = "30m"


def _duration(default: str | None = None) -> dict[str, Any]:
    """A Go duration between 0 and 30 minutes (Kthena's webhook bound for periods and windows)."""
    schema: dict[str, Any] = {
        "type": "string",
        "pattern": DURATION_PATTERN,
        "x-kubernetes-validations": [
            cel(
                f"duration(self) <= duration('{MAX_BEHAVIOR_DURATION}')",
                f"must be a duration between 0s and {MAX_BEHAVIOR_DURATION}",
            )
        ],
    }
    if default is not None:
        schema["default"] = default
    return schema


class ScalePolicy(KubeModel):
    """Scale-down or stable scale-up policy."""

    instances: int | None = Field(None, ge=0, json_schema_extra=crd_default(1))
    """Instances added or removed per period."""
    percent: int | None = Field(None, ge=0, le=1000, json_schema_extra=crd_default(100))
    """Percent of the current instances added or removed per period."""
    period: str | None = Field(None, json_schema_extra=replace_schema(_duration("15s")))
    """Length of a scaling period."""
    select_policy: Literal["Or", "And"] | None = Field(None, json_schema_extra=crd_default("Or"))
    """Combine `instances` and `percent` with `Or` (larger) or `And` (smaller)."""
    stabilization_window: str | None = Field(None, json_schema_extra=replace_schema(_duration()))
    """How long a recommendation must hold before it is applied."""


class PanicPolicy(KubeModel):
    period: str = Field(json_schema_extra=replace_schema(_duration()))
    """Length of a panic-mode period."""
    percent: int | None = Field(None, ge=0, le=1000, json_schema_extra=crd_default(1000))
    """Percent of instances added per period in panic mode."""
    panic_threshold_percent: int | None = Field(None, ge=110, le=1000, json_schema_extra=crd_default(200))
    """Load (percent of target) that triggers panic mode."""
    panic_mode_hold: str | None = Field(None, json_schema_extra=replace_schema(_duration("60s")))
    """How long panic mode lasts."""


class ScaleUp(KubeModel):
    panic_policy: PanicPolicy | None = None
    """Fast scale-up under sudden load."""
    stable_policy: ScalePolicy | None = None
    """Normal scale-up."""


class Behavior(KubeModel):
    scale_up: ScaleUp | None = None
    """How fast to scale up."""
    scale_down: ScalePolicy | None = None
    """How fast to scale down."""


class PodMetricSource(KubeModel):
    name: str | None = None
    label_selector: dict[str, Any] | None = Field(None, json_schema_extra=replace_schema(LABEL_SELECTOR))
    port: int | None = Field(None, ge=1, le=65535, json_schema_extra=crd_default(8100))
    uri: str | None = Field(None, pattern=r"^/", json_schema_extra=crd_default("/metrics"))


class PrometheusMetricSource(KubeModel):
    server_url: str = Field(min_length=1, alias="serverURL", json_schema_extra={"format": "uri"})
    query: str = Field(min_length=1)
    auth: dict[str, Any] | None = Field(None, json_schema_extra=replace_schema(FREE_FORM))


class MetricSource(KubeModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.pod) || has(self.prometheus)", "one metric source backend config is required"),
            cel(
                "!(has(self.pod) && has(self.prometheus))",
                "pod and prometheus configs are mutually exclusive",
            ),
        )
    )

    pod: PodMetricSource | None = None
    prometheus: PrometheusMetricSource | None = None


class MetricEndpoint(KubeModel):
    """Seed era: where the target's pods expose metrics."""

    label_selector: dict[str, Any] | None = Field(None, json_schema_extra=replace_schema(LABEL_SELECTOR))
    uri: str | None = Field(None, json_schema_extra=crd_default("/metrics"))
    port: int | None = Field(None, ge=1, le=65535, json_schema_extra=crd_default(8100))


class SubTarget(KubeModel):
    """Seed era: a role inside the target."""

    kind: str | None = None
    name: str | None = None


TARGET_REF_RULES = [
    cel(
        "!has(self.kind) || self.kind == '' || self.kind == 'ModelServing'",
        "targetRef.kind must be empty or ModelServing",
        field_path=".kind",
    ),
    cel("has(self.name) && self.name != ''", "targetRef.name must be set", field_path=".name"),
]
TARGET_REF: dict[str, Any] = {**OBJECT_REFERENCE, "x-kubernetes-validations": TARGET_REF_RULES}


class ScalingTarget(KubeModel):
    """What is scaled and where its metrics come from (every generation's fields)."""

    target_ref: dict[str, Any] = Field(json_schema_extra=replace_schema(TARGET_REF))
    """The scaled object (usually a ModelServing)."""
    metric_sources: dict[str, MetricSource] | None = None
    """Where each metric is read, by metric name."""
    metric_endpoint: MetricEndpoint | None = None
    """Seed era: where to scrape."""
    sub_targets: SubTarget | None = None
    """Seed era: a role inside the target."""
    additional_match_labels: dict[str, str] | None = None
    """Seed-era (v0.1.0): extra labels selecting the pods to scrape."""


def _min_le_max() -> dict[str, Any]:
    return validations(
        cel(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas cannot be greater than maxReplicas",
            field_path=".minReplicas",
        )
    )


class HomogeneousTarget(KubeModel):
    """Scale one target between ``minReplicas`` and ``maxReplicas`` (``scalingConfiguration`` in v0.1.0)."""

    model_config = ConfigDict(json_schema_extra=_min_le_max())

    min_replicas: int = Field(ge=0, le=MAX_REPLICAS)
    """Fewest instances."""
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS)
    """Most instances."""
    target: ScalingTarget | None = None
    """What is scaled."""


class HeterogeneousParam(KubeModel):
    model_config = ConfigDict(json_schema_extra=_min_le_max())

    min_replicas: int = Field(ge=0, le=MAX_REPLICAS)
    """Fewest instances of this target."""
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS)
    """Most instances of this target."""
    cost: int | None = Field(None, ge=0)
    """Relative cost of one instance."""
    target: ScalingTarget | None = None
    """What is scaled."""


class HeterogeneousTarget(KubeModel):
    """Cost-optimised scaling across several targets (``optimizerConfiguration`` in v0.1.0)."""

    cost_expansion_rate_percent: int | None = Field(None, ge=0, json_schema_extra=crd_default(200))
    """How far the plan may exceed the cheapest one (percent)."""
    params: list[HeterogeneousParam] = Field(min_length=1, max_length=64)
    """The targets and their bounds."""


class RoleScaling(KubeModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            *_min_le_max()["x-kubernetes-validations"],
            cel(
                "!has(self.metrics) || !has(self.metricSources) || "
                f"self.metricSources.all(s, self.metrics.exists(m, {_metric_name('m')} == s))",
                "metricSources key must match an effective metric name (the role's metrics)",
                field_path=".metricSources",
            ),
        )
    )

    min_replicas: int = Field(ge=0, le=MAX_REPLICAS)
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS)
    metrics: list[AutoscalingMetric] | None = Field(
        None, min_length=1, max_length=32, json_schema_extra=_unique_metrics()
    )
    metric_sources: dict[str, MetricSource] | None = Field(None, json_schema_extra={"maxProperties": 16})


class RatioConstraint(KubeModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.numeratorRole != self.denominatorRole", "numeratorRole and denominatorRole must differ"
            ),
            cel(
                f"{_as_float('self.minRatio')} <= {_as_float('self.maxRatio')}",
                "minRatio must be <= maxRatio",
                field_path=".minRatio",
            ),
            cel(f"{_as_float('self.minRatio')} >= 0.0", "minRatio must be >= 0", field_path=".minRatio"),
            cel(f"{_as_float('self.maxRatio')} > 0.0", "maxRatio must be > 0", field_path=".maxRatio"),
        )
    )

    numerator_role: str
    denominator_role: str
    min_ratio: IntOrString = Field(json_schema_extra=replace_schema(QUANTITY))
    max_ratio: IntOrString = Field(json_schema_extra=replace_schema(QUANTITY))


_NUM = "self.roles[self.ratioConstraint.numeratorRole]"
_DEN = "self.roles[self.ratioConstraint.denominatorRole]"
_RC_ROLES = (
    "self.ratioConstraint.numeratorRole in self.roles && self.ratioConstraint.denominatorRole in self.roles"
)


class DisaggregatedTarget(KubeModel):
    """Scale the roles of one ModelServing independently, optionally keeping a ratio."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.ratioConstraint) || size(self.roles) >= 2",
                "roles must contain at least two entries when ratioConstraint is configured",
            ),
            cel(
                "!has(self.ratioConstraint) || self.ratioConstraint.numeratorRole in self.roles",
                "ratioConstraint.numeratorRole must exist in roles",
                field_path=".ratioConstraint.numeratorRole",
            ),
            cel(
                "!has(self.ratioConstraint) || self.ratioConstraint.denominatorRole in self.roles",
                "ratioConstraint.denominatorRole must exist in roles",
                field_path=".ratioConstraint.denominatorRole",
            ),
            cel(
                f"!has(self.ratioConstraint) || !({_RC_ROLES}) || "
                f"(({_NUM}.minReplicas == 0) == ({_DEN}.minReplicas == 0))",
                "ratioConstraint: numeratorRole and denominatorRole must both allow scale to zero "
                "(minReplicas 0) or neither",
                field_path=".ratioConstraint",
            ),
            cel(
                f"!has(self.ratioConstraint) || !({_RC_ROLES}) || {_DEN}.maxReplicas == 0 || "
                f"double({_NUM}.minReplicas) / double({_DEN}.maxReplicas) <= "
                f"{_as_float('self.ratioConstraint.maxRatio')}",
                "ratioConstraint is infeasible: numerator min / denominator max exceeds maxRatio",
                field_path=".ratioConstraint.maxRatio",
            ),
            cel(
                f"!has(self.ratioConstraint) || !({_RC_ROLES}) || {_DEN}.minReplicas == 0 || "
                f"double({_NUM}.maxReplicas) / double({_DEN}.minReplicas) >= "
                f"{_as_float('self.ratioConstraint.minRatio')}",
                "ratioConstraint is infeasible: numerator max / denominator min is below minRatio",
                field_path=".ratioConstraint.minRatio",
            ),
        )
    )

    target_ref: dict[str, Any] = Field(json_schema_extra=replace_schema(TARGET_REF))
    """The ModelServing whose roles are scaled."""
    roles: dict[str, RoleScaling] = Field(json_schema_extra={"minProperties": 1, "maxProperties": 2})
    """Bounds and metrics per role (one or two roles)."""
    ratio_constraint: RatioConstraint | None = None
    """Keep the ratio of two roles' replicas within bounds."""


class ScalingPolicy(KubeModel):
    """What every policy has: a tolerance and the scaling behaviour."""

    tolerance_percent: int | None = Field(None, ge=0, le=100, json_schema_extra=crd_default(10))
    """Deviation from the target ignored (percent)."""
    behavior: Behavior | None = None
    """Scale-up and scale-down rates."""


class BoosterAutoscalingPolicy(ScalingPolicy):
    """A ModelBooster's (model- or backend-level) policy, as the seed era had it: metrics are required and
    the targets are generated by Ferry."""

    metrics: list[AutoscalingMetric] = Field(min_length=1, max_length=32, json_schema_extra=_unique_metrics())
    """Metrics and their per-instance targets."""


_FIXED = (
    "(self.disaggregatedTarget.roles[k].maxReplicas > 0 && "
    "self.disaggregatedTarget.roles[k].minReplicas == self.disaggregatedTarget.roles[k].maxReplicas)"
)
_ROLE = "self.disaggregatedTarget.roles[k]"
_POLICY_RULES = [
    cel(
        "!(has(self.homogeneousTarget) || has(self.heterogeneousTarget)) || has(self.metrics)",
        "metrics must be set for homogeneousTarget and heterogeneousTarget",
        field_path=".metrics",
    ),
    cel(
        f"!has(self.disaggregatedTarget) || self.disaggregatedTarget.roles.all(k, {_FIXED} || "
        f"has({_ROLE}.metrics) || has(self.metrics))",
        "metrics must be set on every non-fixed role when spec.metrics is empty",
        field_path=".disaggregatedTarget.roles",
    ),
    cel(
        f"!has(self.disaggregatedTarget) || self.disaggregatedTarget.roles.all(k, {_FIXED} || "
        f"(has({_ROLE}.metricSources) && size({_ROLE}.metricSources) > 0))",
        "metricSources must be set on every non-fixed role (for its own or the inherited spec.metrics)",
        field_path=".disaggregatedTarget.roles",
    ),
]


class AutoscalingPolicySpec(ScalingPolicy):
    """How to scale: metrics, tolerance, behaviour and (current Kthena) the target itself."""

    metrics: list[AutoscalingMetric] | None = Field(
        None, min_length=1, max_length=32, json_schema_extra=_unique_metrics()
    )
    """Metrics and their per-instance targets."""
    homogeneous_target: HomogeneousTarget | None = None
    """Scale one ModelServing."""
    heterogeneous_target: HeterogeneousTarget | None = None
    """Scale several ModelServings at the lowest cost."""
    disaggregated_target: DisaggregatedTarget | None = None
    """Scale the roles of one ModelServing."""


class MetricStatus(KubeModel):
    """Ferry: a metric's value in the last cycle and its target."""

    name: str
    current_value: str | None = None
    """Sum over ready pods (pod metrics) or the query's value; absent when it was missing."""
    target_value: str | None = None


class ScalingStatus(KubeModel):
    name: str | None = None
    mode: str | None = None
    current_replicas: int
    desired_replicas: int
    last_scale_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    recommended_replicas: int | None = None
    """Ferry: the metric-derived recommendation before behaviour and bounds (``desiredReplicas`` is
    what was decided)."""
    metrics: list[MetricStatus] | None = None
    """Ferry: the metrics of the last cycle."""


class RatioStatus(KubeModel):
    numerator_role: str
    denominator_role: str
    current_ratio: str | None = None


class DisaggregatedStatus(KubeModel):
    roles: list[ScalingStatus]
    ratio_adjusted: bool | None = None
    ratio_status: RatioStatus | None = None


class AutoscalingPolicyStatus(KubeModel):
    observed_generation: int | None = None
    conditions: list[Condition] | None = Field(None, json_schema_extra=CONDITIONS_LIST)
    homogeneous_status: ScalingStatus | None = None
    heterogeneous_status: list[ScalingStatus] | None = None
    disaggregated_status: DisaggregatedStatus | None = None


_TARGET_RULE = cel(
    "(has(self.homogeneousTarget) ? 1 : 0) + (has(self.heterogeneousTarget) ? 1 : 0) + "
    "(has(self.disaggregatedTarget) ? 1 : 0) <= 1",
    "spec: at most one of homogeneousTarget, heterogeneousTarget or disaggregatedTarget may be set",
)


class AutoscalingPolicy(KubeObject):
    GROUP: ClassVar[str] = WORKLOAD_GROUP
    KIND: ClassVar[str] = "AutoscalingPolicy"
    PLURAL: ClassVar[str] = "autoscalingpolicies"

    spec: AutoscalingPolicySpec = Field(json_schema_extra=validations(_TARGET_RULE, *_POLICY_RULES))
    status: AutoscalingPolicyStatus | None = None


class PolicyRef(KubeModel):
    name: str = Field(max_length=253, json_schema_extra=crd_default(""))


class AutoscalingPolicyBindingSpec(KubeModel):
    """Binds a policy to its target(s); exactly one of the four target forms."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(has(self.homogeneousTarget) ? 1 : 0) + (has(self.heterogeneousTarget) ? 1 : 0) + "
                "(has(self.scalingConfiguration) ? 1 : 0) + (has(self.optimizerConfiguration) ? 1 : 0) == 1",
                "spec: exactly one of homogeneousTarget, heterogeneousTarget, scalingConfiguration or "
                "optimizerConfiguration must be set",
            )
        )
    )

    policy_ref: PolicyRef = Field(json_schema_extra={"x-kubernetes-map-type": "atomic"})
    """The AutoscalingPolicy applied."""
    homogeneous_target: HomogeneousTarget | None = None
    """Scale one target."""
    heterogeneous_target: HeterogeneousTarget | None = None
    """Scale several targets at the lowest cost."""
    scaling_configuration: HomogeneousTarget | None = None
    """v0.1.0 name of ``homogeneousTarget``."""
    optimizer_configuration: HeterogeneousTarget | None = None
    """v0.1.0 name of ``heterogeneousTarget``."""


class AutoscalingPolicyBindingStatus(KubeModel):
    observed_generation: int | None = None
    conditions: list[Condition] | None = Field(None, json_schema_extra=CONDITIONS_LIST)
    homogeneous_status: ScalingStatus | None = None
    """Ferry: what the autoscaler saw and decided for the target."""
    heterogeneous_status: list[ScalingStatus] | None = None
    """Ferry: the total and each target's share."""


class AutoscalingPolicyBinding(KubeObject):
    GROUP: ClassVar[str] = WORKLOAD_GROUP
    KIND: ClassVar[str] = "AutoscalingPolicyBinding"
    PLURAL: ClassVar[str] = "autoscalingpolicybindings"

    spec: AutoscalingPolicyBindingSpec
    status: AutoscalingPolicyBindingStatus | None = None
