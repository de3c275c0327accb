"""One reconcile's plan from observed pods: scaling, missing pods, rolling-update steps (§6)."""

from __future__ import annotations

from typing import Any

from ferry_applier.workload.plan import (
    CreateGroup,
    CreatePods,
    DeleteGroup,
    DeleteInstance,
    MarkUpdated,
    Revision,
    plan_workload,
)
from ferry_applier.workload.spec import ROLE_ROLLING_UPDATE, RoleSpec, WorkloadSpec
from ferry_applier.workload.state import observe

MS = "ms"


def revision(name: str = "new", replicas: int = 1, *roles: RoleSpec, **spec: Any) -> Revision:
    roles = roles or (RoleSpec("prefill", 1, 0),)
    return Revision(
        name,
        WorkloadSpec(replicas=replicas, roles=roles, **spec),
        {role.name: f"{role.name}-{name}" for role in roles},
    )


def kinds(plan_actions: list[Any], kind: type) -> list[Any]:
    return [action for action in plan_actions if isinstance(action, kind)]


def test_scale_up_creates_the_lowest_missing_ordinals(make_pod: Any, groups: Any) -> None:
    plan = plan_workload(revision(replicas=3), observe([]))
    assert plan.actions == [CreateGroup(0, "new"), CreateGroup(1, "new"), CreateGroup(2, "new")]
    plan = plan_workload(revision(replicas=4), observe(groups(0, 5)))
    assert plan.actions == [CreateGroup(1, "new"), CreateGroup(2, "new")]  # 5 is kept and counted


def test_scale_down_removes_not_ready_first_then_highest_ordinal(make_pod: Any, groups: Any) -> None:
    plan = plan_workload(revision(replicas=1), observe(groups(0, 1, 2)))
    assert plan.actions == [DeleteGroup(2, "ScaleDown"), DeleteGroup(1, "ScaleDown")]
    pods = groups(1, 2, 3) + groups(0, ready=False)
    plan = plan_workload(revision(replicas=3), observe(pods))
    assert plan.actions == [DeleteGroup(0, "ScaleDown")]


def test_terminating_groups_keep_their_ordinal_reserved(make_pod: Any, groups: Any) -> None:
    pods = groups(0) + groups(1, terminating=True)
    plan = plan_workload(revision(replicas=2), observe(pods))
    assert plan.actions == []  # group 1 comes back only once its pods are gone


def test_missing_pods_of_an_instance_are_recreated_at_its_revision(make_pod: Any, groups: Any) -> None:
    role = RoleSpec("prefill", 1, 2)
    pods = [make_pod(MS, 0, "prefill", 0, index) for index in (0, 2)]
    plan = plan_workload(revision("new", 1, role), observe(pods))
    assert plan.actions == [CreatePods(0, "prefill", 0, (1,), "new")]


def test_role_replicas_scale_up_and_down_inside_groups(make_pod: Any, groups: Any) -> None:
    role = RoleSpec("prefill", 3, 0)
    plan = plan_workload(revision("new", 1, role), observe(groups(0)))
    assert plan.actions == [
        CreatePods(0, "prefill", 1, (0,), "new"),
        CreatePods(0, "prefill", 2, (0,), "new"),
    ]
    pods = [make_pod(MS, 0, "prefill", r) for r in range(3)]
    plan = plan_workload(revision("new", 1, RoleSpec("prefill", 1, 0)), observe(pods))
    assert plan.actions == [
        DeleteInstance(0, "prefill", 2, "ScaleDown"),
        DeleteInstance(0, "prefill", 1, "ScaleDown"),
    ]


def test_rolling_update_walks_in_steps_of_max_unavailable(make_pod: Any, groups: Any) -> None:
    new = revision("new", 4, max_unavailable=2)
    old = {"old": revision("old", 4)}
    # step 1: four running outdated groups → the two highest go
    plan = plan_workload(new, observe(groups(0, 1, 2, 3, revision="old")), revisions=old)
    assert plan.actions == [DeleteGroup(3, "RollingUpdate"), DeleteGroup(2, "RollingUpdate")]
    # step 2: they are gone → recreated at the new revision; nothing else may go down meanwhile
    plan = plan_workload(new, observe(groups(0, 1, revision="old")), revisions=old)
    assert plan.actions == [CreateGroup(2, "new"), CreateGroup(3, "new")]
    # step 3: the new ones are created but not ready → still no budget
    pods = groups(0, 1, revision="old") + groups(2, 3, ready=False)
    assert plan_workload(new, observe(pods), revisions=old).actions == []
    # step 4: ready → the remaining old groups go
    pods = groups(0, 1, revision="old") + groups(2, 3)
    plan = plan_workload(new, observe(pods), revisions=old)
    assert plan.actions == [DeleteGroup(1, "RollingUpdate"), DeleteGroup(0, "RollingUpdate")]


def test_rolling_update_never_exceeds_max_unavailable_when_a_group_is_down(
    make_pod: Any, groups: Any
) -> None:
    new = revision("new", 3, max_unavailable=1)
    pods = groups(0, 1, revision="old") + groups(2, revision="old", ready=False)
    plan = plan_workload(new, observe(pods), revisions={"old": revision("old", 3)})
    assert plan.actions == [DeleteGroup(2, "RollingUpdate")]  # the broken one, not a healthy one


def test_partition_protects_the_first_groups_and_rebuilds_them_at_the_current_revision(
    make_pod: Any, groups: Any
) -> None:
    new = revision("new", 5, max_unavailable=5, partition=3)
    old = {"old": revision("old", 5)}
    plan = plan_workload(new, observe(groups(0, 1, 2, 3, 4, revision="old")), revisions=old)
    assert plan.actions == [DeleteGroup(4, "RollingUpdate"), DeleteGroup(3, "RollingUpdate")]
    pods = groups(0, 2, revision="old") + groups(3, 4)
    plan = plan_workload(new, observe(pods), revisions=old, current_revision="old")
    assert plan.actions == [CreateGroup(1, "old")]
    # scale-up beyond the partition uses the new revision
    new7 = revision("new", 7, max_unavailable=7, partition=3)
    pods = groups(0, 1, 2, revision="old") + groups(3, 4)
    plan = plan_workload(new7, observe(pods), revisions=old, current_revision="old")
    assert plan.actions == [CreateGroup(5, "new"), CreateGroup(6, "new")]


def test_role_rolling_update_replaces_only_the_changed_role_then_marks_the_group_updated(
    make_pod: Any, groups: Any
) -> None:
    prefill, decode = RoleSpec("prefill", 2, 0, max_unavailable=1), RoleSpec("decode", 1, 0)
    new = Revision(
        "new",
        WorkloadSpec(1, (prefill, decode), rollout_type=ROLE_ROLLING_UPDATE),
        {"prefill": "p2", "decode": "d1"},
    )
    pods = [
        make_pod(MS, 0, "prefill", 0, revision="old", role_hash="p1"),
        make_pod(MS, 0, "prefill", 1, revision="old", role_hash="p1"),
        make_pod(MS, 0, "decode", 0, revision="old", role_hash="d1"),
    ]
    plan = plan_workload(new, observe(pods))
    assert plan.actions == [DeleteInstance(0, "prefill", 1, "RollingUpdate")]
    pods[1] = make_pod(MS, 0, "prefill", 1, revision="new", role_hash="p2")
    plan = plan_workload(new, observe(pods))
    assert plan.actions == [DeleteInstance(0, "prefill", 0, "RollingUpdate")]
    pods[0] = make_pod(MS, 0, "prefill", 0, revision="new", role_hash="p2")
    plan = plan_workload(new, observe(pods))
    assert plan.actions == [MarkUpdated(0, "new")]  # decode kept its pod; only its label moves


def test_role_rolling_update_recreates_deleted_instances_with_the_new_template(
    make_pod: Any, groups: Any
) -> None:
    prefill = RoleSpec("prefill", 2, 0, max_unavailable=1)
    new = Revision("new", WorkloadSpec(1, (prefill,), rollout_type=ROLE_ROLLING_UPDATE), {"prefill": "p2"})
    pods = [make_pod(MS, 0, "prefill", 0, revision="old", role_hash="p1")]
    plan = plan_workload(new, observe(pods))
    # the missing instance comes back new; the old one waits: the new one is not ready yet
    assert plan.actions == [CreatePods(0, "prefill", 1, (0,), "new")]


def _role_partitioned(partition: int, replicas: int = 3) -> tuple[Revision, dict[str, Revision]]:
    def rev(name: str) -> Revision:
        role = RoleSpec("prefill", replicas, 0, max_unavailable=replicas, partition=partition)
        return Revision(name, WorkloadSpec(1, (role,), rollout_type=ROLE_ROLLING_UPDATE), {"prefill": name})

    return rev("new"), {"old": rev("old")}


def test_a_lost_instance_below_the_role_partition_comes_back_at_its_old_revision(make_pod: Any) -> None:
    """Kthena's RolePartitionScaleUp: prefill x3, partition 1; instance 0 is lost after the rollout."""
    new, old = _role_partitioned(partition=1)
    rolled = [make_pod(MS, 0, "prefill", r, revision="new", role_hash="new") for r in (1, 2)]
    # no pod of the old revision is left in the group: the protected revision comes from the
    # ModelServing's current revision (the engine's oldest kept snapshot), not from the group
    plan = plan_workload(new, observe(rolled), revisions=old, current_revision="old")
    assert plan.actions == [CreatePods(0, "prefill", 0, (0,), "old")]
    # an ordinal beyond the partition comes back new
    survivors = [make_pod(MS, 0, "prefill", 0, revision="old", role_hash="old"), rolled[1]]
    plan = plan_workload(new, observe(survivors), revisions=old, current_revision="old")
    assert plan.actions == [CreatePods(0, "prefill", 1, (0,), "new")]


def test_surviving_protected_instances_name_the_role_revision(make_pod: Any) -> None:
    new, old = _role_partitioned(partition=2)
    pods = [
        make_pod(MS, 0, "prefill", 1, revision="old", role_hash="old"),
        make_pod(MS, 0, "prefill", 2, revision="new", role_hash="new"),
    ]
    # the caller's current revision says new, but instance 1 shows the role is protected at old
    plan = plan_workload(new, observe(pods), revisions=old, current_revision="new")
    assert plan.actions == [CreatePods(0, "prefill", 0, (0,), "old")]
    # without a snapshot of the old revision the instance can only be rebuilt new
    plan = plan_workload(new, observe(pods), revisions={}, current_revision="new")
    assert plan.actions == [CreatePods(0, "prefill", 0, (0,), "new")]
