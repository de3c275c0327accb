"""AutoscalingPolicy + AutoscalingPolicyBinding for a booster (``spec/booster.md`` §8.2-§8.3, seed 002).

Naming follows the seeds: a model-level ``spec.autoscalingPolicy`` gives one policy and one binding
named ``<booster>``; a backend-level ``backend.autoscalingPolicy`` gives ``<booster>-<backend>``.
Several backends under a model-level policy get a cost-optimising binding (one param per backend);
one target gets a scaling binding. The binding's field names follow the manifest's generation:
``spec.backends[]`` (v0.1.0) renders ``scalingConfiguration``/``optimizerConfiguration`` with
``additionalMatchLabels``; ``spec.backend`` (v0.2-v0.4) renders ``homogeneousTarget``/
``heterogeneousTarget`` with ``metricEndpoint.labelSelector``. Both are in Ferry's binding API.
"""

from __future__ import annotations

import copy
from typing import Any

from ferry_schemas import labels as L

from ferry_converter.booster.backends import Backend
from ferry_converter.booster.meta import BoosterRef, child, revision_of, stamp_revision
from ferry_converter.errors import ConversionFailure

DEFAULT_COST_EXPANSION_RATE_PERCENT = 200
LEADER_ROLE = "leader"


def _replica_bounds(backend: Backend) -> tuple[int, int]:
    """(min, max) replicas: ``minReplicas``/``maxReplicas``, else ``replicas``; max is at least 1."""
    low = backend.min_replicas if backend.min_replicas is not None else backend.replicas
    high = backend.max_replicas if backend.max_replicas is not None else backend.replicas
    low = low if low is not None else 0
    return low, max(high if high is not None else low, low, 1)


def _target(ref: BoosterRef, backend: Backend, legacy: bool) -> dict[str, Any]:
    target_ref = {"kind": "ModelServing", "name": L.booster_child_name(ref.name, backend.name)}
    if legacy:
        return {"targetRef": target_ref, "additionalMatchLabels": {L.MS_ROLE: LEADER_ROLE}}
    return {
        "targetRef": target_ref,
        "metricEndpoint": {"labelSelector": {"matchLabels": {L.MS_ROLE: LEADER_ROLE}}},
    }


def _scaling(ref: BoosterRef, backend: Backend, legacy: bool) -> dict[str, Any]:
    low, high = _replica_bounds(backend)
    return {"minReplicas": low, "maxReplicas": high, "target": _target(ref, backend, legacy)}


def _pair(
    ref: BoosterRef, name: str, backend_label: str, policy: dict[str, Any], binding_body: dict[str, Any]
) -> list[dict[str, Any]]:
    policy_spec = copy.deepcopy(policy)
    asp = child(L.WORKLOAD_API_VERSION, "AutoscalingPolicy", name, ref, backend_label, policy_spec)
    stamp_revision(asp, revision_of(policy_spec))
    binding_spec = {"policyRef": {"name": name}, **binding_body}
    binding = child(
        L.WORKLOAD_API_VERSION, "AutoscalingPolicyBinding", name, ref, backend_label, binding_spec
    )
    stamp_revision(binding, revision_of(binding_spec))
    return [asp, binding]


def build_autoscaling(
    ref: BoosterRef, spec: dict[str, Any], backends: list[Backend], legacy: bool
) -> list[dict[str, Any]]:
    """The policies and bindings the booster asks for (none when no policy is set)."""
    model_policy = spec.get("autoscalingPolicy")
    backend_policies = [backend for backend in backends if backend.autoscaling_policy is not None]
    if isinstance(model_policy, dict) and backend_policies:
        raise ConversionFailure(
            f"{backend_policies[0].path}.autoscalingPolicy",
            "an autoscalingPolicy is set both at model level (spec.autoscalingPolicy) and on this backend; "
            "keep only one of them",
        )
    if isinstance(model_policy, dict):
        if len(backends) == 1:
            body = {
                ("scalingConfiguration" if legacy else "homogeneousTarget"): _scaling(
                    ref, backends[0], legacy
                )
            }
        else:
            rate = spec.get("costExpansionRatePercent")
            params = []
            for backend in backends:
                low, high = _replica_bounds(backend)
                params.append(
                    {
                        "minReplicas": low,
                        "maxReplicas": high,
                        "cost": backend.scaling_cost,
                        "target": _target(ref, backend, legacy),
                    }
                )
            optimizer = {
                "costExpansionRatePercent": rate
                if isinstance(rate, int)
                else DEFAULT_COST_EXPANSION_RATE_PERCENT,
                "params": params,
            }
            body = {("optimizerConfiguration" if legacy else "heterogeneousTarget"): optimizer}
        return _pair(ref, ref.name, "", model_policy, body)
    children: list[dict[str, Any]] = []
    for backend in backend_policies:
        assert backend.autoscaling_policy is not None
        body = {("scalingConfiguration" if legacy else "homogeneousTarget"): _scaling(ref, backend, legacy)}
        name = L.booster_child_name(ref.name, backend.name)
        children += _pair(ref, name, backend.name, backend.autoscaling_policy, body)
    return children
