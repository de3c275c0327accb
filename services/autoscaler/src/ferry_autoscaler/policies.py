"""Policies and bindings as plans: one normalised description of what to scale and on which metrics.

Every generation reads into the same :class:`Plan`: the current policy that carries its own target
(``homogeneousTarget``/``heterogeneousTarget``/``disaggregatedTarget``, ``metrics[].name``), the
v0.4.0 policy + binding pair (``homogeneousTarget``/``heterogeneousTarget`` on the binding,
``metricEndpoint``) and the v0.1.0 names (``scalingConfiguration``/``optimizerConfiguration``,
``metricName``, ``additionalMatchLabels``). A legacy binding's single scrape endpoint becomes one pod
source per policy metric, the migration Kthena's proposal describes (spec §1.2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ferry_schemas.bus import Resource
from ferry_schemas.labels import WORKLOAD_GROUP
from ferry_schemas.quantity import parse_quantity

from ferry_autoscaler.algorithm.behavior import Behavior, resolve_behavior
from ferry_autoscaler.algorithm.ratio import Ratio, RoleBounds

JSON = Mapping[str, Any]
DEFAULT_URI = "/metrics"
DEFAULT_PORT = 8100
DEFAULT_TOLERANCE_PERCENT = 10


class PlanError(ValueError):
    """The policy cannot be acted on (reported as a condition and an Event, never raised further)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, raw: JSON | None) -> LabelSelector:
        raw = raw or {}
        labels = tuple(sorted((str(k), str(v)) for k, v in (raw.get("matchLabels") or {}).items()))
        expressions = tuple(
            (str(e.get("key")), str(e.get("operator")), tuple(str(v) for v in e.get("values") or ()))
            for e in raw.get("matchExpressions") or ()
        )
        return cls(labels, expressions)

    def with_labels(self, extra: Mapping[str, str]) -> LabelSelector:
        merged = dict(self.match_labels) | dict(extra)
        return LabelSelector(tuple(sorted(merged.items())), self.match_expressions)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        for key, operator, values in self.match_expressions:
            present = key in labels
            if operator == "In" and not (present and labels[key] in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class PodSource:
    series: str
    """The series name in the pod's exposition."""
    uri: str = DEFAULT_URI
    port: int = DEFAULT_PORT
    selector: LabelSelector = field(default_factory=LabelSelector)


@dataclass(frozen=True)
class PrometheusSource:
    server_url: str
    query: str


Source = PodSource | PrometheusSource


@dataclass(frozen=True)
class MetricTarget:
    name: str
    target: float
    source: Source | None
    """``None``: the policy names no source for it (the metric is missing every cycle)."""


@dataclass(frozen=True)
class ServingRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ServingUnit:
    """One ModelServing scaled as a whole (a homogeneous target or one heterogeneous param)."""

    ref: ServingRef
    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricTarget, ...]
    cost: int = 0
    role: str | None = None
    """v0.4.0 ``subTargets {kind: Role}``: scale this role's replicas instead of ``spec.replicas``."""


@dataclass(frozen=True)
class RoleUnit:
    name: str
    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricTarget, ...]

    @property
    def fixed(self) -> bool:
        return self.max_replicas > 0 and self.min_replicas == self.max_replicas

    @property
    def bounds(self) -> RoleBounds:
        return RoleBounds(self.min_replicas, self.max_replicas)


@dataclass(frozen=True)
class Homogeneous:
    unit: ServingUnit


@dataclass(frozen=True)
class Heterogeneous:
    units: tuple[ServingUnit, ...]
    expansion_rate_percent: int


@dataclass(frozen=True)
class Disaggregated:
    ref: ServingRef
    roles: tuple[RoleUnit, ...]
    """In name order (Kthena scales roles in sorted order)."""
    ratio: Ratio | None


Target = Homogeneous | Heterogeneous | Disaggregated


@dataclass(frozen=True)
class Owner:
    """The object a plan comes from: its status, conditions and Events go there."""

    resource: str
    kind: str
    namespace: str
    name: str
    uid: str
    generation: int

    @property
    def key(self) -> str:
        return f"{self.resource}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Plan:
    owner: Owner
    revision: tuple[int, ...]
    """Generations of the objects the plan reads; a change rebuilds windows and panic state."""
    tolerance: float
    behavior: Behavior
    target: Target

    @property
    def key(self) -> str:
        return self.owner.key

    def servings(self) -> list[ServingRef]:
        if isinstance(self.target, Homogeneous):
            return [self.target.unit.ref]
        if isinstance(self.target, Heterogeneous):
            return [u.ref for u in self.target.units]
        return [self.target.ref]


@dataclass(frozen=True)
class Broken:
    """A policy or binding that names a target but cannot be acted on."""

    owner: Owner
    error: PlanError


# --------------------------------------------------------------------------- reading


def _owner(resource: str, kind: str, obj: JSON) -> Owner:
    meta = obj.get("metadata") or {}
    return Owner(
        resource, kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""),
        str(meta.get("uid") or ""), int(meta.get("generation") or 0),
    )  # fmt: skip


def quantity(value: Any, where: str) -> float:
    parsed = parse_quantity(value)
    if parsed is None:
        raise PlanError("InvalidSpec", f"{where}: {value!r} is not a quantity")
    number = float(parsed)
    if not math.isfinite(number):
        raise PlanError("InvalidSpec", f"{where}: {value!r} is not finite")
    return number


def metric_targets(raw: Any, where: str) -> dict[str, float]:
    targets: dict[str, float] = {}
    for index, item in enumerate(raw or ()):
        name = item.get("name") or item.get("metricName")
        if not name:
            raise PlanError("InvalidSpec", f"{where}[{index}]: a metric needs a name")
        targets[str(name)] = quantity(item.get("targetValue"), f"{where}[{index}].targetValue")
    return targets


def serving_ref(raw: JSON | None, namespace: str, where: str) -> ServingRef:
    ref = raw or {}
    kind = ref.get("kind") or ""
    if kind not in ("", "ModelServing"):
        raise PlanError("TargetInvalid", f"{where}.kind: target ref kind {kind!r} is not supported")
    api_version = str(ref.get("apiVersion") or "")
    if api_version and api_version.split("/")[0] != WORKLOAD_GROUP:
        raise PlanError("TargetInvalid", f"{where}.apiVersion: {api_version!r} is not {WORKLOAD_GROUP}")
    if not ref.get("name"):
        raise PlanError("TargetInvalid", f"{where}.name: a target needs a name")
    return ServingRef(str(ref.get("namespace") or namespace), str(ref["name"]))


def _source(name: str, raw: JSON | None) -> Source | None:
    if not raw:
        return None
    if raw.get("prometheus"):
        prom = raw["prometheus"]
        return PrometheusSource(str(prom.get("serverURL") or ""), str(prom.get("query") or ""))
    pod = raw.get("pod") or {}
    return PodSource(
        series=str(pod.get("name") or name),
        uri=str(pod.get("uri") or DEFAULT_URI),
        port=int(pod.get("port") or DEFAULT_PORT),
        selector=LabelSelector.parse(pod.get("labelSelector")),
    )


def _metrics(targets: Mapping[str, float], sources: Mapping[str, Source | None]) -> tuple[MetricTarget, ...]:
    return tuple(MetricTarget(n, t, sources.get(n)) for n, t in targets.items())


def _head_sources(target: JSON | None) -> dict[str, Source | None]:
    raw = (target or {}).get("metricSources") or {}
    return {str(k): _source(str(k), v) for k, v in raw.items()}


def _legacy_sources(target: JSON | None, names: list[str]) -> dict[str, Source | None]:
    """v0.4.0 ``metricEndpoint`` / v0.1.0 ``additionalMatchLabels``: one endpoint for every metric."""
    target = target or {}
    endpoint = target.get("metricEndpoint") or {}
    selector = LabelSelector.parse(endpoint.get("labelSelector"))
    if target.get("additionalMatchLabels"):
        selector = selector.with_labels(target["additionalMatchLabels"])
    uri = str(endpoint.get("uri") or DEFAULT_URI)
    port = int(endpoint.get("port") or DEFAULT_PORT)
    if target.get("metricSources"):
        return _head_sources(target)
    return {name: PodSource(name, uri, port, selector) for name in names}


def _unit(
    raw: JSON, namespace: str, where: str, targets: Mapping[str, float], *, legacy: bool
) -> ServingUnit:
    target = raw.get("target") or {}
    ref = serving_ref(target.get("targetRef"), namespace, f"{where}.target.targetRef")
    sources = _legacy_sources(target, list(targets)) if legacy else _head_sources(target)
    sub = target.get("subTargets") or {}
    role = str(sub["name"]) if sub.get("name") and sub.get("kind", "Role") in ("", "Role") else None
    return ServingUnit(
        ref=ref,
        min_replicas=int(raw.get("minReplicas") or 0),
        max_replicas=int(raw.get("maxReplicas") or 0),
        metrics=_metrics(targets, sources),
        cost=int(raw.get("cost") or 0),
        role=role,
    )


def _hetero(
    raw: JSON, namespace: str, where: str, targets: Mapping[str, float], *, legacy: bool
) -> Heterogeneous:
    units = tuple(
        _unit(param, namespace, f"{where}.params[{i}]", targets, legacy=legacy)
        for i, param in enumerate(raw.get("params") or ())
    )
    rate = raw.get("costExpansionRatePercent")
    return Heterogeneous(units, 200 if rate is None else int(rate))


def _disaggregated(raw: JSON, namespace: str, shared: Mapping[str, float]) -> Disaggregated:
    where = "spec.disaggregatedTarget"
    ref = serving_ref(raw.get("targetRef"), namespace, f"{where}.targetRef")
    roles = []
    for name, role in sorted((raw.get("roles") or {}).items()):
        own = metric_targets(role.get("metrics"), f"{where}.roles[{name}].metrics")
        targets = own or dict(shared)
        unit = RoleUnit(str(name), int(role.get("minReplicas") or 0), int(role.get("maxReplicas") or 0), ())
        if not unit.fixed and not own:
            stray = sorted(set(role.get("metricSources") or {}) - set(targets))
            if stray:
                raise PlanError(
                    "InvalidSpec",
                    f"{where}.roles[{name}].metricSources: key {stray[0]!r} must match an effective "
                    "metric name (spec.metrics)",
                )
        if not unit.fixed:
            unit = RoleUnit(
                unit.name, unit.min_replicas, unit.max_replicas, _metrics(targets, _head_sources(role))
            )
        roles.append(unit)
    ratio = None
    if raw.get("ratioConstraint"):
        rc = raw["ratioConstraint"]
        ratio = Ratio(
            str(rc.get("numeratorRole")),
            str(rc.get("denominatorRole")),
            quantity(rc.get("minRatio"), f"{where}.ratioConstraint.minRatio"),
            quantity(rc.get("maxRatio"), f"{where}.ratioConstraint.maxRatio"),
        )
    return Disaggregated(ref, tuple(roles), ratio)


def _shaping(policy: JSON) -> tuple[float, Behavior]:
    spec = policy.get("spec") or {}
    tolerance = spec.get("tolerancePercent")
    percent = DEFAULT_TOLERANCE_PERCENT if tolerance is None else int(tolerance)
    return percent * 0.01, resolve_behavior(spec.get("behavior"))


def plan_for_policy(policy: JSON) -> Plan | Broken | None:
    """The plan of a current-API policy; ``None`` for a legacy policy (its bindings carry targets)."""
    spec = policy.get("spec") or {}
    owner = _owner(Resource.AUTOSCALING_POLICIES, "AutoscalingPolicy", policy)
    kinds = [k for k in ("homogeneousTarget", "heterogeneousTarget", "disaggregatedTarget") if spec.get(k)]
    if not kinds:
        return None
    try:
        shared = metric_targets(spec.get("metrics"), "spec.metrics")
        tolerance, behavior = _shaping(policy)
        target: Target
        if spec.get("homogeneousTarget"):
            unit = _unit(
                spec["homogeneousTarget"], owner.namespace, "spec.homogeneousTarget", shared, legacy=False
            )
            target = Homogeneous(unit)
        elif spec.get("heterogeneousTarget"):
            target = _hetero(
                spec["heterogeneousTarget"], owner.namespace, "spec.heterogeneousTarget", shared, legacy=False
            )
        else:
            target = _disaggregated(spec["disaggregatedTarget"], owner.namespace, shared)
    except (PlanError, ValueError) as exc:
        error = exc if isinstance(exc, PlanError) else PlanError("InvalidSpec", str(exc))
        return Broken(owner, error)
    return Plan(owner, (owner.generation,), tolerance, behavior, target)


def plan_for_binding(binding: JSON, policy: JSON | None) -> Plan | Broken:
    """The plan of a v0.4.0 / v0.1.0 binding and the policy it names."""
    spec = binding.get("spec") or {}
    owner = _owner(Resource.AUTOSCALING_POLICY_BINDINGS, "AutoscalingPolicyBinding", binding)
    policy_name = (spec.get("policyRef") or {}).get("name")
    if policy is None:
        return Broken(owner, PlanError("PolicyNotFound", f"AutoscalingPolicy {policy_name!r} not found"))
    try:
        targets = metric_targets((policy.get("spec") or {}).get("metrics"), "policy spec.metrics")
        tolerance, behavior = _shaping(policy)
        target: Target
        homogeneous = spec.get("homogeneousTarget") or spec.get("scalingConfiguration")
        hetero = spec.get("heterogeneousTarget") or spec.get("optimizerConfiguration")
        if homogeneous:
            target = Homogeneous(
                _unit(homogeneous, owner.namespace, "spec.homogeneousTarget", targets, legacy=True)
            )
        elif hetero:
            target = _hetero(hetero, owner.namespace, "spec.heterogeneousTarget", targets, legacy=True)
        else:
            raise PlanError("InvalidSpec", "the binding has no target")
    except (PlanError, ValueError) as exc:
        error = exc if isinstance(exc, PlanError) else PlanError("InvalidSpec", str(exc))
        return Broken(owner, error)
    policy_gen = int((policy.get("metadata") or {}).get("generation") or 0)
    return Plan(owner, (owner.generation, policy_gen), tolerance, behavior, target)
