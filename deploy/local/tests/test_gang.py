"""Gang admission decides which pending pods the local node binds."""

from __future__ import annotations

from typing import Any

import pytest
from ferry_local.node.gang import bindable


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
