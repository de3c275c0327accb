"""Gang admission decides which pending pods the local node binds."""

from __future__ import annotations

from typing import Any

import pytest
from ferry_local.node.gang import NOT_FIT, bindable, fits, schedule


def pod(name: str, group: str | None = None, task: str = "", **extra: Any) -> dict[str, Any]:
    annotations = {}
    if group:
        annotations["scheduling.k8s.io/group-name"] = group
    if task:
        annotations["volcano.sh/task-spec"] = task
    meta = {"name": name, "namespace": "ns", "uid": name, "annotations": annotations}
    meta.update(extra.pop("meta", {}))
    return {
        "metadata": meta,
        "spec": extra.pop("spec", {}),
        "status": extra.pop("status", {"phase": "Pending"}),
    }


def podgroup(name: str, min_member: int, min_task: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"minMember": min_member, "minTaskMember": min_task},
    }


def names(pods: list[dict[str, Any]]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


@pytest.mark.parametrize(
    ("pods", "groups", "expected"),
    [
        pytest.param([pod("a")], {}, ["a"], id="no-group-binds-at-once"),
        pytest.param([pod("a", "g")], {}, [], id="missing-podgroup-waits"),
        pytest.param(
            [pod("a", "g"), pod("b", "g")], {("ns", "g"): podgroup("g", 3)}, [], id="below-min-member"
        ),
        pytest.param(
            [pod("a", "g"), pod("b", "g"), pod("c", "g")],
            {("ns", "g"): podgroup("g", 3)},
            ["a", "b", "c"],
            id="min-member-met-binds-all",
        ),
        pytest.param(
            [pod("a", "g", spec={"nodeName": "n"}, status={"phase": "Running"}), pod("b", "g")],
            {("ns", "g"): podgroup("g", 2)},
            ["b"],
            id="bound-members-count-toward-the-gang",
        ),
        pytest.param(
            [pod("a", "g", meta={"deletionTimestamp": "x"}), pod("b", "g")],
            {("ns", "g"): podgroup("g", 2)},
            [],
            id="terminating-pods-do-not-count",
        ),
        pytest.param(
            [pod("p0", "g", "prefill-0"), pod("d0", "g", "decode-0")],
            {("ns", "g"): podgroup("g", 2, {"prefill": 1, "decode": 2})},
            [],
            id="min-task-member-not-met",
        ),
        pytest.param(
            [pod("p0", "g", "prefill-0"), pod("d0", "g", "decode-0"), pod("d1", "g", "decode-1")],
            {("ns", "g"): podgroup("g", 2, {"prefill": 1, "decode": 2})},
            ["p0", "d0", "d1"],
            id="min-task-member-met",
        ),
    ],
)
def test_bindable(
    pods: list[dict[str, Any]], groups: dict[tuple[str, str], Any], expected: list[str]
) -> None:
    assert names(bindable(pods, groups)) == expected


NODE_LABELS = {"kubernetes.io/hostname": "ferry-local", "pool": "a100", "gpus": "8"}


def affinity(*expressions: dict[str, Any]) -> dict[str, Any]:
    terms = [{"matchExpressions": list(expressions)}]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


@pytest.mark.parametrize(
    ("spec", "fit"),
    [
        ({}, True),
        ({"nodeSelector": {"pool": "a100"}}, True),
        ({"nodeSelector": {"pool": "h100"}}, False),
        ({"affinity": affinity({"key": "pool", "operator": "In", "values": ["h100", "a100"]})}, True),
        ({"affinity": affinity({"key": "pool", "operator": "NotIn", "values": ["a100"]})}, False),
        ({"affinity": affinity({"key": "zone", "operator": "Exists"})}, False),
        ({"affinity": affinity({"key": "zone", "operator": "DoesNotExist"})}, True),
        ({"affinity": affinity({"key": "gpus", "operator": "Gt", "values": ["4"]})}, True),
        ({"affinity": affinity({"key": "gpus", "operator": "Lt", "values": ["4"]})}, False),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}
                    }
                }
            },
            False,
        ),  # an empty term matches no node
    ],
)
def test_node_fit(spec: dict[str, Any], fit: bool) -> None:
    assert fits({"spec": spec}, "ferry-local", NODE_LABELS) is fit


def test_a_member_that_cannot_fit_keeps_its_whole_gang_pending_and_each_pod_says_why() -> None:
    unfit = {"nodeSelector": {"pool": "h100"}}
    pods = [pod("p0", "g", "prefill-0"), pod("d0", "g", "decode-0", spec=unfit)]
    plan = schedule(pods, {("ns", "g"): podgroup("g", 2)}, "ferry-local", NODE_LABELS)
    assert plan.bind == []
    assert {p["metadata"]["name"]: why for p, why in plan.waiting} == {
        "p0": "pod group g is not ready: 1 of its minMember 2 pods can be scheduled",
        "d0": NOT_FIT,
    }
    fixed = schedule(pods, {("ns", "g"): podgroup("g", 2)}, "ferry-local", {**NODE_LABELS, "pool": "h100"})
    assert names(fixed.bind) == ["p0", "d0"]
    assert fixed.waiting == []
