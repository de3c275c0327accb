"""Recovery policies, restart grace, pod classification and the prune set (§6.4, design §2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ferry_applier.children import prune_candidates
from ferry_applier.reconciler import replaced_alone, still_desired
from ferry_applier.workload.plan import DeleteGroup, DeleteInstance
from ferry_applier.workload.recovery import PodAddress, failed_since, grace_remaining, recovery_action
from ferry_applier.workload.spec import RoleSpec, WorkloadSpec
from ferry_applier.workload.state import GROUP_INCARNATION, INSTANCE_INCARNATION, observe, pod_state

ADDRESS = PodAddress("ms", 1, "prefill", 2)


@pytest.mark.parametrize(
    ("policy", "action"),
    [
        ("ServingGroupRecreate", DeleteGroup(1, "ServingGroupRecreate")),
        ("RoleRecreate", DeleteInstance(1, "prefill", 2, "RoleRecreate")),
        ("", DeleteInstance(1, "prefill", 2, "RoleRecreate")),  # the default
        ("None", None),  # only the lost pod itself comes back
    ],
)
def test_recovery_action_per_policy(policy: str, action: object) -> None:
    assert recovery_action(policy, ADDRESS) == action


def test_pod_address_from_labels(make_pod: Any) -> None:
    assert PodAddress.of(make_pod("ms", 1, "prefill", 2, 3)) == ADDRESS
    assert PodAddress.of({"metadata": {"labels": {}}}) is None


def test_grace_period() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert grace_remaining(now - timedelta(seconds=10), 0, now) == 0
    assert grace_remaining(now - timedelta(seconds=10), 30, now) == pytest.approx(20)
    assert grace_remaining(now - timedelta(seconds=40), 30, now) == 0


def test_failed_since_uses_the_ready_transition(make_pod: Any) -> None:
    pod = make_pod("ms", 0, "prefill", 0, ready=False, phase="Failed")
    fallback = datetime(2026, 1, 1, tzinfo=UTC)
    assert failed_since(pod, fallback) == fallback
    pod["status"]["conditions"][0]["lastTransitionTime"] = "2026-11-22T10:00:00Z"
    assert failed_since(pod, fallback) == datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kw", "ready", "failed"),
    [
        ({}, True, False),
        ({"ready": False}, False, False),
        ({"ready": False, "phase": "Failed"}, False, True),
        ({"ready": False, "phase": "Running", "restarts": 2}, False, True),
        ({"ready": True, "restarts": 2}, True, False),  # ready wins over restarted
        ({"ready": False, "phase": "Succeeded"}, False, False),  # left alone, like Kthena
    ],
)
def test_pod_classification(kw: dict[str, object], ready: bool, failed: bool, make_pod: Any) -> None:
    state = pod_state(make_pod("ms", 0, "prefill", 0, **kw))  # type: ignore[arg-type]
    assert (state.ready, state.failed) == (ready, failed)


def test_observe_sorts_numerically_and_ignores_unlabelled_pods(make_pod: Any) -> None:
    pods = [make_pod("ms", g, "prefill", 0) for g in (10, 2)] + [
        {"metadata": {"name": "stray", "labels": {}}}
    ]
    assert [g.ordinal for g in observe(pods)] == [2, 10]


def test_prune_set_is_labelled_children_that_are_not_desired() -> None:
    selector = {"owner": "b1"}

    def obj(kind: str, name: str, labels: dict[str, str]) -> dict[str, object]:
        return {"kind": kind, "metadata": {"name": name, "labels": labels}}

    existing = [
        obj("ModelServing", "keep", selector),
        obj("ModelServing", "gone", selector),
        obj("ModelServing", "foreign", {"owner": "b2"}),
        obj("ModelRoute", "gone", {**selector, "extra": "x"}),
    ]
    doomed = prune_candidates(existing, {("ModelServing", "keep")}, selector)
    assert [(o["kind"], o["metadata"]["name"]) for o in doomed] == [  # type: ignore[index]
        ("ModelServing", "gone"),
        ("ModelRoute", "gone"),
    ]
    assert prune_candidates(existing, set(), {}) == []  # no selector: never prune anything


def _annotated(group: str, instance: str) -> dict[str, object]:
    return {"metadata": {"annotations": {GROUP_INCARNATION: group, INSTANCE_INCARNATION: instance}}}


@pytest.mark.parametrize(
    ("policy", "replacement", "alone"),
    [
        ("RoleRecreate", _annotated("g1", "i1"), True),  # only the lost pod came back
        ("RoleRecreate", _annotated("g1", "i2"), False),  # the instance was rebuilt
        ("ServingGroupRecreate", _annotated("g1", "i2"), True),  # the instance, not the group
        ("ServingGroupRecreate", _annotated("g2", "i3"), False),  # the group was rebuilt
        ("None", _annotated("g1", "i1"), False),  # nothing to rebuild under None
        ("RoleRecreate", {"metadata": {}}, False),  # unknown: never force a rebuild
    ],
)
def test_a_late_tombstone_knows_whether_the_unit_was_rebuilt(
    policy: str, replacement: dict[str, object], alone: bool
) -> None:
    assert replaced_alone(_annotated("g1", "i1"), replacement, policy) is alone


@pytest.mark.parametrize(
    ("address", "pod", "desired"),
    [
        (PodAddress("ms", 1, "prefill", 0), "ms-1-prefill-0-1", True),
        (PodAddress("ms", 2, "prefill", 0), "ms-2-prefill-0-0", False),  # group scaled away
        (PodAddress("ms", 0, "prefill", 2), "ms-0-prefill-2-0", False),  # role instance scaled away
        (PodAddress("ms", 0, "prefill", 0), "ms-0-prefill-0-2", False),  # worker beyond workerReplicas
        (PodAddress("ms", 0, "gone", 0), "ms-0-gone-0-0", False),  # role removed
    ],
)
def test_only_pods_still_desired_trigger_recovery(address: PodAddress, pod: str, desired: bool) -> None:
    spec = WorkloadSpec(replicas=2, roles=(RoleSpec("prefill", 2, 1),))
    assert still_desired(spec, address, pod) is desired
