"""The workload decisions as pure functions (spec/serving.md §6.1, §6.2, §6.6).

:func:`plan_workload` looks at the observed groups once and returns the actions of one
reconcile. Each step sees the previous steps' effect (a group created by scale-up counts as a new,
unavailable group in the rolling-update budget), so one reconcile never takes more than the
allowed step; the next one is triggered by the pod events the actions cause.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ferry_applier.workload.spec import (
    ROLE_ROLLING_UPDATE,
    RoleSpec,
    WorkloadSpec,
    resolve,
)
from ferry_applier.workload.state import GroupState, InstanceState

# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class CreateGroup:
    ordinal: int
    revision: str


@dataclass(frozen=True)
class DeleteGroup:
    ordinal: int
    reason: str


@dataclass(frozen=True)
class CreatePods:
    """Create the pods ``indices`` of role instance ``<role>-<role_ordinal>`` in group ``group``."""

    group: int
    role: str
    role_ordinal: int
    indices: tuple[int, ...]
    revision: str


@dataclass(frozen=True)
class DeleteInstance:
    group: int
    role: str
    role_ordinal: int
    reason: str


@dataclass(frozen=True)
class MarkUpdated:
    """Every role of the group is on the new template: move its pods' revision label to ``revision``."""

    group: int
    revision: str


Action = CreateGroup | DeleteGroup | CreatePods | DeleteInstance | MarkUpdated


@dataclass(frozen=True)
class Revision:
    """One template revision the applier can build pods from."""

    name: str
    spec: WorkloadSpec
    role_hashes: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- ordinals


def missing_ordinals(existing: Iterable[int], expected: int, limit: int) -> list[int]:
    """The lowest ordinals of ``[0, expected)`` not in ``existing``, at most ``limit`` of them."""
    taken = set(existing)
    found: list[int] = []
    ordinal = 0
    while ordinal < expected and len(found) < limit:
        if ordinal not in taken:
            found.append(ordinal)
        ordinal += 1
    return found


# --------------------------------------------------------------------------- scale-down order


@dataclass(frozen=True)
class Scored:
    """A scale-down candidate: ``priority`` 1 when Running, deletion cost, ordinal."""

    ordinal: int
    priority: int
    cost: int


def _deletion_order(entries: Iterable[Scored]) -> list[Scored]:
    """Not-ready first, then lower deletion cost, then higher ordinal (§6.1)."""
    return sorted(entries, key=lambda s: (s.priority, s.cost, -s.ordinal))


def group_scale_down(candidates: list[Scored], want: int, partition: int) -> list[int]:
    """Ordinals of the ServingGroups to delete to get from ``len(candidates)`` down to ``want``.

    ``candidates`` are in ordinal order and include Deleting groups (priority 0); the first
    ``partition`` list positions are protected and only deleted when nothing else is left.
    """
    to_delete = len(candidates) - want
    if to_delete <= 0:
        return []
    cut = min(max(partition, 0), len(candidates))
    protected, unprotected = candidates[:cut], candidates[cut:]
    chosen = _deletion_order(unprotected)[:to_delete]
    if len(chosen) < to_delete and partition > 0:
        chosen += _deletion_order(protected)[: to_delete - len(chosen)]
    return [s.ordinal for s in chosen]


def role_scale_down(instances: list[tuple[Scored, bool]], want: int, partition: int) -> list[int]:
    """Ordinals of the role instances to delete (§6.2 step 4).

    ``instances`` are (score, deleting) in ordinal order; Deleting ones are not scored but still
    occupy the first ``partition`` protected list positions.
    """
    scored = [score for score, deleting in instances if not deleting]
    if len(scored) <= want:
        return []
    protected_ordinals = {score.ordinal for score, _ in instances[: max(partition, 0)]}
    unprotected = [s for s in scored if s.ordinal not in protected_ordinals]
    protected = [s for s in scored if s.ordinal in protected_ordinals]
    to_delete = len(scored) - want
    chosen = _deletion_order(unprotected)[:to_delete]
    if len(chosen) < to_delete and partition > 0:
        chosen += _deletion_order(protected)[: to_delete - len(chosen)]
    return [s.ordinal for s in chosen]


# --------------------------------------------------------------------------- rolling update


@dataclass(frozen=True)
class GroupView:
    """What the ServingGroup rolling update looks at."""

    ordinal: int
    running: bool
    revision: str


def group_rolling_update(
    groups: list[GroupView], revision: str, replicas: int, max_unavailable: int, partition: int
) -> list[int]:
    """Outdated groups to delete now under ServingGroupRollingUpdate (§6.6 step 4).

    Groups beyond the partition are classed as new-unavailable, not-running outdated and running
    outdated; the budget is ``len(groups) - (replicas - maxUnavailable) - newUnavailable`` and the
    outdated list (running ones first) is taken from its end: not-running ones first, then running
    ones, highest ordinal first. A group already being deleted counts against the budget.
    """
    if partition >= len(groups):
        return []
    new_unavailable = 0
    running_outdated: list[GroupView] = []
    not_running_outdated: list[GroupView] = []
    for group in groups[max(partition, 0) :]:
        if group.revision == revision:
            if not group.running:
                new_unavailable += 1
        elif group.running:
            running_outdated.append(group)
        else:
            not_running_outdated.append(group)
    budget = len(groups) - (replicas - max_unavailable) - new_unavailable
    if budget <= 0:
        return []
    ordered = running_outdated + not_running_outdated
    return [group.ordinal for group in reversed(ordered)][:budget]


@dataclass(frozen=True)
class InstanceView:
    """What the RoleRollingUpdate looks at for one role instance."""

    ordinal: int
    role_hash: str
    running: bool
    deleting: bool


def role_rolling_update(
    instances: list[InstanceView], role_hash: str, role: RoleSpec, partition: int
) -> tuple[list[int], bool]:
    """(instance ordinals to delete now, whether the role still has outdated instances) (§6.6 step 5)."""
    new_unavailable = 0
    outdated: list[InstanceView] = []
    for inst in instances:
        if inst.deleting:
            new_unavailable += 1
            continue
        if not inst.role_hash:
            continue  # no hash known: never force a restart of such an instance
        if inst.role_hash != role_hash:
            outdated.append(inst)
        elif not inst.running:
            new_unavailable += 1
    protected = {inst.ordinal for inst in instances[: max(partition, 0)]}
    candidates = [inst for inst in outdated if inst.ordinal not in protected]
    if not candidates:
        return [], bool(outdated)
    candidates.sort(key=lambda inst: (inst.running, -inst.ordinal))
    if role.max_unavailable is None:
        budget = len(candidates)
    else:
        try:
            max_unavailable = resolve(role.max_unavailable, role.replicas, round_up=False)
        except ValueError:
            return [], True
        budget = max(0, len(instances) - max(0, role.replicas - max_unavailable) - new_unavailable)
    return [inst.ordinal for inst in candidates[:budget]], True


# --------------------------------------------------------------------------- the whole plan


@dataclass
class WorkloadPlan:
    actions: list[Action] = field(default_factory=list)
    groups: list[GroupState] = field(default_factory=list)
    """The groups as they will be once the actions are done (planned groups included)."""


def _instance(group: GroupState, role: str, ordinal: int) -> InstanceState | None:
    return next((inst for inst in group.instances.get(role, []) if inst.ordinal == ordinal), None)


def plan_workload(
    new: Revision,
    observed: list[GroupState],
    *,
    revisions: Mapping[str, Revision] | None = None,
    current_revision: str = "",
) -> WorkloadPlan:
    """The actions of one reconcile: group scaling, role scaling and missing pods, rolling update.

    ``revisions`` are the older template revisions that still have a snapshot; ``current_revision``
    is the revision partition-protected groups are (re)built at.
    """
    known = dict(revisions or {})
    known[new.name] = new
    spec = new.spec
    plan = WorkloadPlan(groups=list(observed))
    groups = plan.groups
    partition = spec.group_partition
    protected_revision = current_revision if current_revision in known else new.name

    def revision_of(group: GroupState) -> Revision:
        return known.get(group.revision_against(new.name), new)

    # 1. ServingGroup count (§6.1)
    want = spec.replicas
    if len(groups) < want:
        for ordinal in missing_ordinals((g.ordinal for g in groups), want, want - len(groups)):
            revision = protected_revision if partition > 0 and ordinal < partition else new.name
            plan.actions.append(CreateGroup(ordinal, revision))
            groups.append(GroupState(ordinal=ordinal, planned_revision=revision))
        groups.sort(key=lambda g: g.ordinal)
    elif len(groups) > want:
        scored = [Scored(g.ordinal, 1 if g.running(revision_of(g).spec) else 0, g.cost) for g in groups]
        for ordinal in group_scale_down(scored, want, partition):
            group = next(g for g in groups if g.ordinal == ordinal)
            if not group.deleting:
                plan.actions.append(DeleteGroup(ordinal, "ScaleDown"))
            group.deleting_planned = True

    # 2. Role instances and missing pods of every existing group (§6.2)
    for position, group in enumerate(groups):
        if group.deleting or group.planned:
            continue
        group_protected = partition > 0 and position < partition
        template = revision_of(group) if group_protected or spec.rollout_type != ROLE_ROLLING_UPDATE else new
        for role in template.spec.roles:
            _sync_role(plan, group, role, template, known, new, protected_revision)

    # 3. Rolling update (§6.6)
    if spec.rollout_type == ROLE_ROLLING_UPDATE:
        _role_rolling_update(plan, groups, new, partition)
    else:
        views = [
            GroupView(g.ordinal, g.running(revision_of(g).spec), g.revision_against(new.name)) for g in groups
        ]
        for ordinal in group_rolling_update(
            views, new.name, spec.replicas, spec.group_max_unavailable, partition
        ):
            group = next(g for g in groups if g.ordinal == ordinal)
            if not group.deleting:
                plan.actions.append(DeleteGroup(ordinal, "RollingUpdate"))
            group.deleting_planned = True
    return plan


def _sync_role(
    plan: WorkloadPlan,
    group: GroupState,
    role: RoleSpec,
    template: Revision,
    known: Mapping[str, Revision],
    new: Revision,
    protected_revision: str,
) -> None:
    spec = new.spec
    instances = group.role_instances(role.name)
    role_partition = spec.role_partition(role)
    # missing pods of existing instances, rebuilt at the instance's own revision when known
    for inst in instances:
        if inst.deleting:
            continue
        missing = inst.missing_indices(role)
        if missing:
            own = known.get(inst.revision)
            revision = own.name if own is not None and own.spec.role(role.name) is not None else template.name
            plan.actions.append(CreatePods(group.ordinal, role.name, inst.ordinal, tuple(missing), revision))
    if len(instances) < role.replicas:
        role_protected = _role_protected_revision(
            instances, role, role_partition, new, known, protected_revision
        )
        for ordinal in missing_ordinals(
            (i.ordinal for i in instances), role.replicas, role.replicas - len(instances)
        ):
            protected = role_partition > 0 and ordinal < role_partition and role_protected != new.name
            revision = role_protected if protected else template.name
            plan.actions.append(
                CreatePods(group.ordinal, role.name, ordinal, tuple(range(role.pods_per_instance)), revision)
            )
            instances.append(InstanceState(role=role.name, ordinal=ordinal, planned=True))
        instances.sort(key=lambda inst: inst.ordinal)
    elif len(instances) > role.replicas:
        candidates = [
            (Scored(inst.ordinal, 1 if inst.running(role) else 0, inst.cost), inst.deleting)
            for inst in instances
        ]
        for ordinal in role_scale_down(candidates, role.replicas, role_partition):
            victim = _instance(group, role.name, ordinal)
            if victim is not None:
                plan.actions.append(DeleteInstance(group.ordinal, role.name, ordinal, "ScaleDown"))
                victim.deleting_planned = True


def _role_protected_revision(
    instances: list[InstanceState],
    role: RoleSpec,
    role_partition: int,
    new: Revision,
    known: Mapping[str, Revision],
    protected_revision: str,
) -> str:
    """The revision a role instance below the role-level partition is (re)built at (spec §6.2 step 3).

    The revision of the role's surviving protected instances when they are on an old one; else the
    ModelServing's protected revision (the old revision still in use, or the oldest kept snapshot).
    A revision without a snapshot of this role falls back to the new one.
    """
    if role_partition <= 0:
        return new.name
    survivors = [
        inst.revision
        for inst in instances
        if inst.ordinal < role_partition and not inst.deleting and not inst.planned and inst.revision
    ]
    for revision in [*_by_count(survivors), protected_revision]:
        old = known.get(revision)
        if revision != new.name and old is not None and old.spec.role(role.name) is not None:
            return revision
    return new.name


def _by_count(values: list[str]) -> list[str]:
    """Distinct values, most common first (ties by value, so the choice is deterministic)."""
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return sorted(counts, key=lambda value: (-counts[value], value))


def _role_rolling_update(plan: WorkloadPlan, groups: list[GroupState], new: Revision, partition: int) -> None:
    """§6.6 step 5: walk outdated groups from the end; each group has its own per-role budget."""
    spec = new.spec
    outdated_running: list[GroupState] = []
    outdated_not_running: list[GroupState] = []
    for group in groups[max(partition, 0) :]:
        if group.deleting or group.planned:
            continue
        if group.revision_against(new.name) == new.name:
            continue
        (outdated_running if group.running(spec) else outdated_not_running).append(group)
    for group in reversed(outdated_running + outdated_not_running):
        has_outdated = False
        for role in spec.roles:
            instances = group.role_instances(role.name)
            views = [
                InstanceView(
                    inst.ordinal,
                    new.role_hashes.get(role.name, "") if inst.planned else inst.role_hash,
                    inst.running(role),
                    inst.deleting,
                )
                for inst in instances
            ]
            victims, outdated = role_rolling_update(
                views, new.role_hashes.get(role.name, ""), role, spec.role_partition(role)
            )
            has_outdated = has_outdated or outdated
            for ordinal in victims:
                inst = _instance(group, role.name, ordinal)
                if inst is not None and not inst.deleting:
                    plan.actions.append(DeleteInstance(group.ordinal, role.name, ordinal, "RollingUpdate"))
                    inst.deleting_planned = True
        for role_name, instances in group.instances.items():
            if spec.role(role_name) is not None:
                continue
            for inst in instances:
                if not inst.deleting:
                    plan.actions.append(DeleteInstance(group.ordinal, role_name, inst.ordinal, "RoleRemoved"))
                    inst.deleting_planned = True
                    has_outdated = True
        if not has_outdated:
            plan.actions.append(MarkUpdated(group.ordinal, new.name))
