"""Every generation's policy/binding reads into the same plan (spec §1.1-§1.2, §7.7, §7.8 targetRef)."""

from __future__ import annotations

from typing import Any

import pytest
from ferry_autoscaler.policies import (
    Broken,
    Disaggregated,
    Heterogeneous,
    Homogeneous,
    LabelSelector,
    Plan,
    PodSource,
    PrometheusSource,
    plan_for_binding,
    plan_for_policy,
)
from ferry_autoscaler.settings import sync_period

META = {"namespace": "ns", "name": "p", "uid": "u1", "generation": 3}


def policy(spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "AutoscalingPolicy", "metadata": dict(META), "spec": spec}


def head_homogeneous(target_ref: dict[str, Any]) -> dict[str, Any]:
    return policy(
        {
            "metrics": [{"name": "load", "targetValue": "500m"}],
            "homogeneousTarget": {
                "minReplicas": 1,
                "maxReplicas": 5,
                "target": {
                    "targetRef": target_ref,
                    "metricSources": {"load": {"pod": {"name": "engine_load", "port": 8000}}},
                },
            },
        }
    )


def test_head_homogeneous() -> None:
    plan = plan_for_policy(head_homogeneous({"name": "ms"}))
    assert isinstance(plan, Plan)
    assert isinstance(plan.target, Homogeneous)
    unit = plan.target.unit
    assert (str(unit.ref), unit.min_replicas, unit.max_replicas) == ("ns/ms", 1, 5)
    assert unit.metrics[0].target == 0.5
    assert unit.metrics[0].source == PodSource("engine_load", "/metrics", 8000)
    assert plan.tolerance == pytest.approx(0.1)  # the CRD default when unset
    assert plan.key == "autoscalingpolicies/ns/p"


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        ({"name": "ms"}, True),
        ({"name": "ms", "apiVersion": "workload.serving.volcano.sh/v1alpha1"}, True),
        ({"name": "ms", "apiVersion": "networking.serving.volcano.sh/v1alpha1"}, False),
        ({"name": "ms", "kind": "Other"}, False),
    ],
)
def test_target_ref_check(ref: dict[str, Any], ok: bool) -> None:
    plan = plan_for_policy(head_homogeneous(ref))
    assert isinstance(plan, Plan) is ok
    if not ok:
        assert isinstance(plan, Broken)
        assert plan.error.reason == "TargetInvalid"


def test_legacy_policy_without_target_has_no_plan_of_its_own() -> None:
    assert plan_for_policy(policy({"metrics": [{"metricName": "m", "targetValue": 1}]})) is None


def test_v040_binding_metric_endpoint_becomes_one_pod_source_per_metric() -> None:
    legacy = policy(
        {"metrics": [{"metricName": "a", "targetValue": 2}, {"metricName": "b", "targetValue": 3}]}
    )
    binding = {
        "metadata": {**META, "name": "b"},
        "spec": {
            "policyRef": {"name": "p"},
            "homogeneousTarget": {
                "minReplicas": 1,
                "maxReplicas": 4,
                "target": {
                    "targetRef": {"kind": "ModelServing", "name": "ms"},
                    "metricEndpoint": {
                        "labelSelector": {"matchLabels": {"modelserving.volcano.sh/role": "leader"}}
                    },
                },
            },
        },
    }
    plan = plan_for_binding(binding, legacy)
    assert isinstance(plan, Plan)
    assert isinstance(plan.target, Homogeneous)
    leader = LabelSelector((("modelserving.volcano.sh/role", "leader"),))
    assert [(m.name, m.target, m.source) for m in plan.target.unit.metrics] == [
        ("a", 2, PodSource("a", "/metrics", 8100, leader)),
        ("b", 3, PodSource("b", "/metrics", 8100, leader)),
    ]
    assert plan.revision == (3, 3)
    assert plan.owner.kind == "AutoscalingPolicyBinding"


def test_v010_optimizer_configuration_and_additional_match_labels() -> None:
    legacy = policy({"metrics": [{"metricName": "m", "targetValue": 1}]})
    binding = {
        "metadata": {**META, "name": "b"},
        "spec": {
            "policyRef": {"name": "p"},
            "optimizerConfiguration": {
                "costExpansionRatePercent": 150,
                "params": [
                    {"minReplicas": 1, "maxReplicas": 3, "cost": 5,
                     "target": {"targetRef": {"name": "a"}, "additionalMatchLabels": {"role": "leader"}}},
                    {"minReplicas": 0, "maxReplicas": 2, "cost": 9, "target": {"targetRef": {"name": "b"}}},
                ],
            },
        },
    }  # fmt: skip
    plan = plan_for_binding(binding, legacy)
    assert isinstance(plan, Plan)
    assert isinstance(plan.target, Heterogeneous)
    assert plan.target.expansion_rate_percent == 150
    assert [(str(u.ref), u.cost) for u in plan.target.units] == [("ns/a", 5), ("ns/b", 9)]
    source = plan.target.units[0].metrics[0].source
    assert isinstance(source, PodSource)
    assert dict(source.selector.match_labels) == {"role": "leader"}


def test_binding_without_its_policy_is_broken() -> None:
    binding = {"metadata": META, "spec": {"policyRef": {"name": "gone"}, "homogeneousTarget": {}}}
    plan = plan_for_binding(binding, None)
    assert isinstance(plan, Broken)
    assert plan.error.reason == "PolicyNotFound"


def pd_policy(roles: dict[str, Any], metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"disaggregatedTarget": {"targetRef": {"name": "ms"}, "roles": roles}}
    if metrics:
        spec["metrics"] = metrics
    return policy(spec)


def test_role_metrics_override_shared_ones_and_fixed_roles_get_none() -> None:
    prom = {"prometheus": {"serverURL": "http://prom:9090", "query": "sum(x)"}}
    plan = plan_for_policy(
        pd_policy(
            {
                "prefill": {"minReplicas": 1, "maxReplicas": 4,
                            "metrics": [{"name": "prefill_load", "targetValue": 5}],
                            "metricSources": {"prefill_load": prom}},
                "decode": {"minReplicas": 1, "maxReplicas": 8, "metricSources": {"shared_load": {"pod": {}}}},
                "router": {"minReplicas": 2, "maxReplicas": 2},
            },
            [{"name": "shared_load", "targetValue": 10}],
        )
    )  # fmt: skip
    assert isinstance(plan, Plan)
    assert isinstance(plan.target, Disaggregated)
    roles = {r.name: r for r in plan.target.roles}
    assert [r.name for r in plan.target.roles] == ["decode", "prefill", "router"]  # sorted
    assert [(m.name, m.target) for m in roles["prefill"].metrics] == [("prefill_load", 5)]
    assert roles["prefill"].metrics[0].source == PrometheusSource("http://prom:9090", "sum(x)")
    assert [(m.name, m.target) for m in roles["decode"].metrics] == [("shared_load", 10)]
    assert roles["router"].fixed
    assert roles["router"].metrics == ()


def test_inherited_metric_source_key_must_name_a_metric() -> None:
    broken = plan_for_policy(
        pd_policy(
            {"decode": {"minReplicas": 1, "maxReplicas": 8, "metricSources": {"other": {"pod": {}}}}},
            [{"name": "shared_load", "targetValue": 10}],
        )
    )
    assert isinstance(broken, Broken)
    assert "metricSources: key 'other' must match an effective metric name" in str(broken.error)


def test_sync_period() -> None:
    assert sync_period(0) == 15
    assert sync_period(-3) == 15
    assert sync_period(5) == 5
