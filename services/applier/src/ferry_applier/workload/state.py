"""The workload as the API server has it: ServingGroups and role instances built from pods.

Kthena keeps this in an in-memory store; Ferry rebuilds it from the pods on every reconcile
(level-triggered, nothing a restart could lose). A group or role instance whose pods are all
terminating is *Deleting*: its ordinal stays reserved until the pods are gone (§6.5).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ferry_schemas import labels as L

from ferry_applier.workload.spec import RoleSpec, WorkloadSpec

GROUP_INCARNATION = "applier.ferry/group-incarnation"
"""Annotation: one id per creation of a ServingGroup, shared by all its pods."""
INSTANCE_INCARNATION = "applier.ferry/instance-incarnation"
"""Annotation: one id per creation of a role instance, shared by its entry and workers.

A pod recreated alone (the missing-pods path) keeps its siblings' ids; a recreated group or
instance gets new ones. That is how a late tombstone tells "the policy already rebuilt the unit"
from "only the lost pod came back" (see ``Reconciler.pod_event``).
"""


@dataclass(frozen=True)
class PodState:
    name: str
    uid: str
    index: int
    revision: str
    role_hash: str
    ready: bool
    failed: bool
    terminating: bool
    deletion_cost: int
    group_incarnation: str = ""
    instance_incarnation: str = ""


@dataclass
class InstanceState:
    """One role instance (``<role>-<r>``) of one ServingGroup."""

    role: str
    ordinal: int
    pods: dict[int, PodState] = field(default_factory=dict)
    planned: bool = False  # created by this reconcile's plan (not yet observed)
    deleting_planned: bool = False

    @property
    def role_id(self) -> str:
        return L.role_id(self.role, self.ordinal)

    @property
    def live_pods(self) -> list[PodState]:
        return [pod for pod in self.pods.values() if not pod.terminating]

    @property
    def deleting(self) -> bool:
        return self.deleting_planned or (bool(self.pods) and not self.live_pods and not self.planned)

    @property
    def role_hash(self) -> str:
        return _most_common(pod.role_hash for pod in self.live_pods)

    @property
    def revision(self) -> str:
        return _most_common(pod.revision for pod in self.live_pods)

    @property
    def cost(self) -> int:
        return sum(pod.deletion_cost for pod in self.pods.values())

    @property
    def incarnation(self) -> str:
        return _most_common(pod.instance_incarnation for pod in self.live_pods)

    def running(self, role: RoleSpec | None) -> bool:
        """Every one of the role's ``1 + workerReplicas`` pods exists and is Running and Ready."""
        if role is None or self.deleting or self.planned:
            return False
        live = self.live_pods
        return len(live) == role.pods_per_instance and all(pod.ready for pod in live)

    def missing_indices(self, role: RoleSpec) -> list[int]:
        """Pod indices ``0..workerReplicas`` with no pod at all (terminating ones still count)."""
        return [index for index in range(role.pods_per_instance) if index not in self.pods]


@dataclass
class GroupState:
    """One ServingGroup ``<ms>-<g>``."""

    ordinal: int
    instances: dict[str, list[InstanceState]] = field(default_factory=dict)
    planned_revision: str = ""  # set when this reconcile's plan creates the group
    deleting_planned: bool = False

    @property
    def pods(self) -> list[PodState]:
        return [
            pod for instances in self.instances.values() for inst in instances for pod in inst.pods.values()
        ]

    @property
    def planned(self) -> bool:
        return bool(self.planned_revision)

    @property
    def deleting(self) -> bool:
        if self.deleting_planned:
            return True
        pods = self.pods
        return not self.planned and bool(pods) and all(pod.terminating for pod in pods)

    @property
    def revision(self) -> str:
        """The group's revision: an outdated pod label wins over the new one (mixed = outdated)."""
        if self.planned:
            return self.planned_revision
        revisions = [pod.revision for pod in self.pods if not pod.terminating]
        return _most_common(revisions)

    def revision_against(self, new_revision: str) -> str:
        """Like :attr:`revision`, but any pod still on another revision keeps the group outdated."""
        if self.planned:
            return self.planned_revision
        old = [pod.revision for pod in self.pods if not pod.terminating and pod.revision != new_revision]
        return _most_common(old) if old else new_revision

    @property
    def cost(self) -> int:
        return sum(pod.deletion_cost for pod in self.pods)

    @property
    def incarnation(self) -> str:
        return _most_common(pod.group_incarnation for pod in self.pods if not pod.terminating)

    def role_instances(self, role: str) -> list[InstanceState]:
        return self.instances.setdefault(role, [])

    def running(self, spec: WorkloadSpec) -> bool:
        """§5.2: every spec role has exactly ``replicas`` instances and all of them are Running."""
        if self.deleting or self.planned:
            return False
        for role in spec.roles:
            instances = [inst for inst in self.instances.get(role.name, []) if not inst.deleting]
            if len(instances) != role.replicas or not all(inst.running(role) for inst in instances):
                return False
        return True


def _most_common(values: Iterable[str]) -> str:
    counts = Counter(value for value in values if value)
    if not counts:
        return ""
    best = max(counts.values())
    return min(value for value, count in counts.items() if count == best)  # deterministic tie-break


def pod_state(pod: dict[str, Any]) -> PodState:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or ""
    ready = phase == "Running" and any(
        cond.get("type") == "Ready" and cond.get("status") == "True"
        for cond in status.get("conditions") or []
    )
    restarted = any(
        int(cs.get("restartCount") or 0) > 0
        for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    )
    failed = not ready and (phase == "Failed" or (phase in ("Running", "Pending") and restarted))
    try:
        cost = int(annotations.get(L.POD_DELETION_COST_ANNOTATION, 0))
    except (TypeError, ValueError):
        cost = 0
    _, index = L.parse_ordinal(meta.get("name") or "")
    return PodState(
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        index=index,
        revision=labels.get(L.MS_REVISION, ""),
        role_hash=labels.get(L.MS_ROLE_TEMPLATE_HASH) or labels.get(L.MS_REVISION, ""),
        ready=ready,
        failed=failed,
        terminating=bool(meta.get("deletionTimestamp")),
        deletion_cost=cost,
        group_incarnation=str(annotations.get(GROUP_INCARNATION, "")),
        instance_incarnation=str(annotations.get(INSTANCE_INCARNATION, "")),
    )


def observe(pods: Iterable[dict[str, Any]]) -> list[GroupState]:
    """Group pods into ServingGroups and role instances, sorted by numeric ordinal (§4.2)."""
    groups: dict[int, GroupState] = {}
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        _, group_ordinal = L.parse_ordinal(labels.get(L.MS_GROUP_NAME, ""))
        role = labels.get(L.MS_ROLE, "")
        _, role_ordinal = L.parse_ordinal(labels.get(L.MS_ROLE_ID, ""))
        if group_ordinal < 0 or not role or role_ordinal < 0:
            continue  # not one of ours (or hand-made): never counted, never touched
        state = pod_state(pod)
        group = groups.setdefault(group_ordinal, GroupState(ordinal=group_ordinal))
        instances = group.role_instances(role)
        instance = next((inst for inst in instances if inst.ordinal == role_ordinal), None)
        if instance is None:
            instance = InstanceState(role=role, ordinal=role_ordinal)
            instances.append(instance)
        instance.pods[state.index] = state
    for group in groups.values():
        for instances in group.instances.values():
            instances.sort(key=lambda inst: inst.ordinal)
    return [groups[ordinal] for ordinal in sorted(groups)]
