"""Scheduling for the one local node: which pending pods may be bound now, and why the others wait
(pure, like kube-scheduler's node filter and Volcano's minMember check).

A pod *fits* the node when its ``nodeSelector`` and its required node affinity match the node's
labels; one that does not stays Pending (kube-scheduler's "didn't match Pod's node affinity/selector").
A pod that names a PodGroup (annotation ``scheduling.k8s.io/group-name``) is bound only when its
group has at least ``minMember`` pods that are bound or fit, and at least ``minTaskMember[task]`` of
each task (task = annotation ``volcano.sh/task-spec``); then the whole group's pending pods bind
together. A pod without a group binds at once when it fits. A pod whose PodGroup does not exist yet
waits. :func:`schedule` also says, for each waiting pod, why (the node reports it on the pod).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
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


NOT_FIT = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
"""kube-scheduler's words for a pod whose node selector or required node affinity no node matches."""


def _expression_matches(expression: Obj, value: str | None) -> bool:
    operator, values = expression.get("operator"), [str(v) for v in expression.get("values") or []]
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            have, bound = int(value), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def _term_matches(term: Obj, node_name: str, labels: Mapping[str, str]) -> bool:
    """A node selector term: every expression holds (an empty term matches no node, as in Kubernetes)."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    return all(_expression_matches(e, labels.get(str(e.get("key")))) for e in expressions) and all(
        _expression_matches(f, node_name if f.get("key") == "metadata.name" else None) for f in fields
    )


def fits(pod: Obj, node_name: str, labels: Mapping[str, str]) -> bool:
    """Whether the pod's ``nodeSelector`` and required node affinity (any term) match the node."""
    spec = pod.get("spec") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms")
    return terms is None or any(_term_matches(t, node_name, labels) for t in terms)


def why_gang_waits(podgroup: Obj, members: list[Obj]) -> str | None:
    """Why ``members`` (the live pods of this group that are bound or fit) do not meet its minimums;
    None when they do."""
    name = _meta(podgroup).get("name", "")
    spec = podgroup.get("spec") or {}
    needed = int(spec.get("minMember") or 0)
    if len(members) < needed:
        return (
            f"pod group {name} is not ready: {len(members)} of its minMember {needed} pods can be scheduled"
        )
    per_task = Counter(task_of(p) for p in members)
    for task, count in (spec.get("minTaskMember") or {}).items():
        # Kthena's minTaskMember keys are role names; pods carry "<role>-<ordinal>" task specs.
        have = sum(n for t, n in per_task.items() if t == task or t.rsplit("-", 1)[0] == task)
        if have < int(count):
            return (
                f"pod group {name} is not ready: {have} of its minTaskMember {count} {task} pods "
                "can be scheduled"
            )
    return None


def gang_satisfied(podgroup: Obj, members: list[Obj]) -> bool:
    """Whether ``members`` (the live pods naming this group) meet its minimums."""
    return why_gang_waits(podgroup, members) is None


@dataclass
class Schedule:
    """One scheduling pass: the pods to bind now, and each waiting pod with the reason it waits."""

    bind: list[Obj] = field(default_factory=list)
    waiting: list[tuple[Obj, str]] = field(default_factory=list)


def schedule(
    pods: list[Obj],
    podgroups: dict[tuple[str, str], Obj],
    node_name: str = "",
    labels: Mapping[str, str] | None = None,
) -> Schedule:
    """Which pending unbound pods bind now (``podgroups`` keyed by (namespace, name)); with ``labels``
    (the node's), pods that do not fit the node wait and do not count toward their gang."""

    def schedulable(pod: Obj) -> bool:
        return labels is None or bool((pod.get("spec") or {}).get("nodeName")) or fits(pod, node_name, labels)

    members: dict[tuple[str, str], list[Obj]] = defaultdict(list)
    for pod in pods:
        if (group := group_of(pod)) and _is_alive(pod) and schedulable(pod):
            members[(_meta(pod).get("namespace", ""), group)].append(pod)
    out = Schedule()
    for pod in pods:
        if not is_pending_unbound(pod):
            continue
        if not schedulable(pod):
            out.waiting.append((pod, NOT_FIT))
            continue
        group = group_of(pod)
        if group is None:
            out.bind.append(pod)
            continue
        key = (_meta(pod).get("namespace", ""), group)
        podgroup = podgroups.get(key)
        why = (
            f"PodGroup {group} does not exist yet"
            if podgroup is None
            else why_gang_waits(podgroup, members[key])
        )
        if why is None:
            out.bind.append(pod)
        else:
            out.waiting.append((pod, why))
    return out


def bindable(pods: list[Obj], podgroups: dict[tuple[str, str], Obj]) -> list[Obj]:
    """The pending unbound pods that may be bound now (gang minimums only; node fit aside)."""
    return schedule(pods, podgroups).bind
