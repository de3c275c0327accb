"""Spec §7.8 (``autoscale_controller_test.go``): one cycle per target type against pods serving real
HTTP metrics on 127.0.0.x; the role patch; the status a cycle writes."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import pytest
from ferry_autoscaler.algorithm.behavior import Behavior, PanicSettings, StepPolicy
from ferry_autoscaler.collector import MetricCollector
from ferry_autoscaler.kube import role_patch
from ferry_autoscaler.policies import Owner, Plan, PlanError, plan_for_policy
from ferry_autoscaler.scaler import Outcome, Scaler
from ferry_autoscaler.status import compose_status

from .conftest import Serve, pod

NO_LIMITS = Behavior(
    StepPolicy(1, 100, 0.0, "Or", 0.0),
    StepPolicy(1, 100, 0.0, "Or", 0.0),
    PanicSettings(1000, 0.0, None, 0.0),
)
"""Kthena's unit tests run without the webhook: every window unset."""
AT = "2026-01-01T00:00:00Z"


def serving(
    name: str, replicas: int, namespace: str = "ns", roles: dict[str, int] | None = None
) -> dict[str, Any]:
    template_roles = [
        {
            "name": r,
            "replicas": n,
            "entryTemplate": {"spec": {"containers": [{"image": "x", "resources": {}}]}},
        }
        for r, n in (roles or {"leader": 1}).items()
    ]
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "template": {"roles": template_roles}},
    }


class World:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.servings: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.scaler = Scaler(MetricCollector(session), self.lookup, self.list_pods)

    def lookup(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.servings.get((namespace, name))

    def list_pods(self, namespace: str) -> list[dict[str, Any]]:
        return [p for p in self.pods if p["metadata"]["namespace"] == namespace]

    def add(self, obj: dict[str, Any]) -> None:
        self.servings[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj


@pytest.fixture
def world(session: aiohttp.ClientSession) -> World:
    return World(session)


def plan_of(spec: dict[str, Any], behavior: Behavior = NO_LIMITS) -> Plan:
    plan = plan_for_policy({"metadata": {"namespace": "ns", "name": "p", "generation": 1}, "spec": spec})
    assert isinstance(plan, Plan)
    return dataclasses.replace(plan, behavior=behavior)


def homogeneous(port: int, tolerance: int, low: int, high: int) -> dict[str, Any]:
    return {
        "tolerancePercent": tolerance,
        "metrics": [{"name": "load", "targetValue": 1}],
        "homogeneousTarget": {
            "minReplicas": low,
            "maxReplicas": high,
            "target": {"targetRef": {"name": "ms"}, "metricSources": {"load": {"pod": {"port": port}}}},
        },
    }


async def test_untyped_metric_means_no_write(world: World, serve_metrics: Serve) -> None:
    port = await serve_metrics("127.0.0.2", {"/metrics": "load 1\n"})
    world.add(serving("ms", 3))
    world.pods.append(pod("a", "127.0.0.2"))
    outcome = await world.scaler.cycle(plan_of(homogeneous(port, 100, 1, 100)), 0.0)
    assert outcome.writes == []
    assert outcome.skipped is not None
    assert "unsupported type" in outcome.skipped


async def test_homogeneous_scales_to_the_summed_load(world: World, serve_metrics: Serve) -> None:
    port = await serve_metrics("127.0.0.2", {"/metrics": "# TYPE load gauge\nload 10\n"})
    world.add(serving("ms", 1))
    world.pods.append(pod("a", "127.0.0.2"))
    outcome = await world.scaler.cycle(plan_of(homogeneous(port, 0, 1, 10)), 0.0)
    assert [(str(w.ref), w.replicas) for w in outcome.writes] == [("ns/ms", 10)]
    status = compose_status(outcome.plan.owner, outcome, {}, AT, scaled={"ns/ms"})
    unit = status["homogeneousStatus"]
    assert (unit["currentReplicas"], unit["desiredReplicas"], unit["recommendedReplicas"]) == (1, 10, 10)
    assert unit["metrics"] == [{"name": "load", "currentValue": "10", "targetValue": "1"}]
    assert unit["lastScaleTime"] == AT
    assert [c["type"] for c in status["conditions"] if c["status"] == "True"] == [
        "Ready", "TargetFound", "ScalingActive",
    ]  # fmt: skip


def heterogeneous(port: int, params: list[tuple[str, str, int, int, int]]) -> dict[str, Any]:
    return {
        "tolerancePercent": 0,
        "metrics": [{"name": "load", "targetValue": 1}],
        "heterogeneousTarget": {
            "costExpansionRatePercent": 100,
            "params": [
                {
                    "cost": cost,
                    "minReplicas": low,
                    "maxReplicas": high,
                    "target": {
                        "targetRef": {"name": name, "namespace": ns},
                        "metricSources": {"load": {"pod": {"port": port}}},
                    },
                }
                for ns, name, cost, low, high in params
            ],
        },
    }


PANIC = dataclasses.replace(NO_LIMITS, panic=PanicSettings(1000, 1.0, 200, 0.0))


async def test_heterogeneous_split(world: World, serve_metrics: Serve) -> None:
    port = await serve_metrics("127.0.0.2", {"/metrics": "# TYPE load gauge\nload 100\n"})
    for ip in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
        await serve_metrics(ip, {"/metrics": "# TYPE load gauge\nload 100\n"})
    world.add(serving("a", 1))
    world.add(serving("b", 2))
    world.pods += [
        pod("a0", "127.0.0.2", "a"), pod("a1", "127.0.0.3", "a"),
        pod("b0", "127.0.0.4", "b"), pod("b1", "127.0.0.5", "b"),
    ]  # fmt: skip
    plan = plan_of(heterogeneous(port, [("ns", "a", 10, 1, 5), ("ns", "b", 20, 2, 4)]), PANIC)
    outcome = await world.scaler.cycle(plan, 0.0)
    assert {str(w.ref): w.replicas for w in outcome.writes} == {"ns/a": 5, "ns/b": 4}
    # the status shows the total's metric as weighed (summed over backends) and each backend's own
    units = compose_status(outcome.plan.owner, outcome, {}, AT)["heterogeneousStatus"]
    assert [(u["name"], u["currentReplicas"], u["desiredReplicas"]) for u in units] == [
        ("total", 3, 9), ("ns/a", 1, 5), ("ns/b", 2, 4),
    ]  # fmt: skip
    assert [u["metrics"] for u in units] == [
        [{"name": "load", "currentValue": "400", "targetValue": "1"}],
        [{"name": "load", "currentValue": "200", "targetValue": "1"}],
        [{"name": "load", "currentValue": "200", "targetValue": "1"}],
    ]


async def test_same_name_in_two_namespaces_are_two_targets(world: World, serve_metrics: Serve) -> None:
    port = await serve_metrics("127.0.0.2", {"/metrics": "# TYPE load gauge\nload 100\n"})
    await serve_metrics("127.0.0.3", {"/metrics": "# TYPE load gauge\nload 100\n"})
    world.add(serving("llama", 1, "team-a"))
    world.add(serving("llama", 2, "team-b"))
    world.pods += [
        pod("a", "127.0.0.2", "llama", namespace="team-a"),
        pod("b", "127.0.0.3", "llama", namespace="team-b"),
    ]
    plan = plan_of(
        heterogeneous(port, [("team-a", "llama", 100, 1, 3), ("team-b", "llama", 60, 2, 5)]), PANIC
    )
    outcome = await world.scaler.cycle(plan, 0.0)
    assert {str(w.ref): w.replicas for w in outcome.writes} == {"team-a/llama": 3, "team-b/llama": 5}


async def test_disaggregated_ratio_repair_and_status(world: World, serve_metrics: Serve) -> None:
    port = await serve_metrics("127.0.0.2", {"/metrics": "# TYPE prefill_load gauge\nprefill_load 6\n"})
    await serve_metrics("127.0.0.3", {"/metrics": "# TYPE decode_load gauge\ndecode_load 2\n"})
    world.add(serving("ms", 1, roles={"prefill": 1, "decode": 2}))
    world.pods += [pod("p", "127.0.0.2", role="prefill"), pod("d", "127.0.0.3", role="decode")]
    source = {"pod": {"port": port}}
    spec = {
        "tolerancePercent": 0,
        "disaggregatedTarget": {
            "targetRef": {"name": "ms"},
            "roles": {
                "prefill": {"minReplicas": 1, "maxReplicas": 8,
                            "metrics": [{"name": "prefill_load", "targetValue": 1}],
                            "metricSources": {"prefill_load": source}},
                "decode": {"minReplicas": 2, "maxReplicas": 16,
                           "metrics": [{"name": "decode_load", "targetValue": 1}],
                           "metricSources": {"decode_load": source}},
            },
            "ratioConstraint": {"numeratorRole": "prefill", "denominatorRole": "decode",
                                "minRatio": "250m", "maxRatio": "1"},
        },
    }  # fmt: skip
    outcome = await world.scaler.cycle(plan_of(spec), 0.0)
    assert [dict(w.roles or {}) for w in outcome.writes] == [{"prefill": 6, "decode": 6}]
    status = compose_status(outcome.plan.owner, outcome, {}, AT)["disaggregatedStatus"]
    assert status["ratioAdjusted"] is True
    assert status["ratioStatus"] == {
        "numeratorRole": "prefill",
        "denominatorRole": "decode",
        "currentRatio": "1",
    }
    assert {r["name"]: r["currentReplicas"] for r in status["roles"]} == {"prefill": 1, "decode": 2}


async def test_single_fixed_role_without_pods(world: World) -> None:
    world.add(serving("ms", 1, roles={"decode": 5}))
    spec = {
        "disaggregatedTarget": {
            "targetRef": {"name": "ms"},
            "roles": {"decode": {"minReplicas": 2, "maxReplicas": 2}},
        }
    }
    outcome = await world.scaler.cycle(plan_of(spec), 0.0)
    assert [dict(w.roles or {}) for w in outcome.writes] == [{"decode": 2}]


async def test_missing_target_is_reported(world: World) -> None:
    outcome = await world.scaler.cycle(plan_of(homogeneous(8100, 0, 1, 2)), 0.0)
    assert outcome.error is not None
    assert not outcome.target_found
    status = compose_status(outcome.plan.owner, outcome, {}, AT)
    found = next(c for c in status["conditions"] if c["type"] == "TargetFound")
    assert (found["status"], found["reason"]) == ("False", "TargetNotFound")


def test_error_after_the_target_was_found_keeps_target_found_true() -> None:
    owner = Owner("autoscalingpolicies", "AutoscalingPolicy", "ns", "p", "u", 1)
    plan = plan_of(homogeneous(8100, 0, 1, 2))
    outcome = Outcome(plan, error=PlanError("ReconcileFailed", "patch failed"))
    conditions = {c["type"]: c for c in compose_status(owner, outcome, {}, AT)["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "ReconcileFailed")
    assert conditions["TargetFound"]["status"] == "True"


def test_role_patch_tests_each_role_name_then_adds_replicas() -> None:
    obj = serving("ms", 1, roles={"prefill": 1, "decode": 2})
    ops = role_patch(obj, {"decode": 4})
    assert ops == [
        {"op": "test", "path": "/spec/template/roles/1/name", "value": "decode"},
        {"op": "add", "path": "/spec/template/roles/1/replicas", "value": 4},
    ]
    assert role_patch(obj, {}) == []
    assert "resources" not in str(ops)
    assert "image" not in str(ops)


async def test_wake_scales_a_target_at_zero_to_one(world: World) -> None:
    world.add(serving("ms", 0))
    plan = plan_of(homogeneous(8100, 0, 0, 3))
    outcome = world.scaler.wake(plan, plan.servings()[0], 0.0)
    assert outcome is not None
    assert [(str(w.ref), w.replicas) for w in outcome.writes] == [("ns/ms", 1)]
    world.add(serving("ms", 1))
    assert world.scaler.wake(plan, plan.servings()[0], 1.0) is None  # not at zero: nothing to do
