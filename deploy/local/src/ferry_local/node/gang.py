"""Gang admission: which pending pods may be bound now (pure, like Volcano's minMember check).

A pod that names a PodGroup (annotation ``scheduling.k8s.io/group-name``) is bound only when its
group has at least ``minMember`` pods and at least ``minTaskMember[task]`` pods of each task
(task = annotation ``volcano.sh/task-spec``); then the whole group's pending pods bind together.
A pod without a group binds at once. A pod whose PodGroup does not exist yet waits.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from ferry_schemas.labels import VOLCANO_GROUP_NAME_ANNOTATION, VOLCANO_TASK_SPEC_ANNOTATION

Obj = dict[str, Any]


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def is_pending_unbound(pod: Obj) -> bool:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    return (
        not spec.get("nodeName")
        and not _meta(pod).get("deletionTimestamp")
        and status.get("phase", "Pending") == "Pending"
    )


def _is_alive(pod: Obj) -> bool:
    return not _meta(pod).get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in (
        "Failed",
        "Succeeded",
    )


def group_of(pod: Obj) -> str | None:
    return (_meta(pod).get("annotations") or {}).get(VOLCANO_GROUP_NAME_ANNOTATION)


def task_of(pod: Obj) -> str:
    annotations = _meta(pod).get("annotations") or {}
    return str(annotations.get(VOLCANO_TASK_SPEC_ANNOTATION, ""))


def gang_satisfied(podgroup: Obj, members: list[Obj]) -> bool:
    """Whether ``members`` (the live pods naming this group) meet its minimums."""
    spec = podgroup.get("spec") or {}
    if len(members) < int(spec.get("minMember") or 0):
        return False
    per_task = Counter(task_of(p) for p in members)
    for task, needed in (spec.get("minTaskMember") or {}).items():
        # Kthena's minTaskMember keys are role names; pods carry "<role>-<ordinal>" task specs.
        have = sum(n for t, n in per_task.items() if t == task or t.rsplit("-", 1)[0] == task)
        if have < int(needed):
            return False
    return True


def bindable(pods: list[Obj], podgroups: dict[tuple[str, str], Obj]) -> list[Obj]:
    """The pending unbound pods that may be bound now; ``podgroups`` is keyed by (namespace, name)."""
    members: dict[tuple[str, str], list[Obj]] = defaultdict(list)
    for pod in pods:
        if (group := group_of(pod)) and _is_alive(pod):
            members[(_meta(pod).get("namespace", ""), group)].append(pod)
    ready: list[Obj] = []
    for pod in pods:
        if not is_pending_unbound(pod):
            continue
        group = group_of(pod)
        if group is None:
            ready.append(pod)
            continue
        key = (_meta(pod).get("namespace", ""), group)
        podgroup = podgroups.get(key)
        if podgroup is not None and gang_satisfied(podgroup, members[key]):
            ready.append(pod)
    return ready
