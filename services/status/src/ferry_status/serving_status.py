"""ModelServing status from its pods (spec/serving.md §5.2, §6.7), as a pure function.

Kthena keeps ServingGroup state in controller memory; Ferry derives it from the pods every time
(level-triggered), so a restarted status service computes the same answer. A group is Running
when every role of the current spec has exactly ``replicas`` instances, each with exactly
``1 + workerReplicas`` Running and Ready pods.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from ferry_schemas.labels import (
    ENTRY_VALUE,
    MS_ENTRY,
    MS_NAME,
    MS_REVISION,
    MS_ROLE,
    MS_ROLE_ID,
    pod_slot,
)
from ferry_schemas.workload import serving_revision

from ferry_status.conditions import Condition, condition, merge_condition, merge_serving_condition
from ferry_status.outcome import Outcome

JSON = dict[str, Any]

REASON_AVAILABLE = "AllGroupsReady"
REASON_PROGRESSING = "GroupProgressing"
REASON_UPDATING = "GroupsUpdating"


def pod_kept(pod: JSON) -> JSON:
    """What the status view keeps of a pod: its metadata, phase and conditions (readiness, why it
    cannot be scheduled) — never its spec, the largest part of it."""
    status = pod.get("status") or {}
    kept: JSON = {key: pod[key] for key in ("apiVersion", "kind", "metadata") if key in pod}
    kept["status"] = {key: status[key] for key in ("phase", "conditions") if key in status}
    return kept


REVISION = "ferryRevision"
"""Where :func:`serving_kept` keeps the revision of the roles whose pod templates it drops."""
ROLE_KEPT = ("name", "replicas", "workerReplicas")
"""What a status reads of a role (the groups it counts); the revision stands for the rest."""


def serving_kept(serving: JSON) -> JSON:
    """What the status view keeps of a ModelServing: all but its roles' pod templates (nearly all of
    it: kept, the view packed each ModelServing and decoded it on every read), and the revision those
    roles hash to (:func:`~ferry_schemas.workload.serving_revision`) under :data:`REVISION`."""
    spec = serving.get("spec") or {}
    template = spec.get("template") or {}
    roles = template.get("roles") or []
    slim = [{key: role[key] for key in ROLE_KEPT if key in role} for role in roles]
    return {
        **serving,
        "spec": {**spec, "template": {**template, "roles": slim}},
        REVISION: serving_revision(roles),
    }


def revision_of(serving: JSON) -> str:
    """The revision of the ModelServing's roles: kept by :func:`serving_kept`, else computed."""
    kept = serving.get(REVISION)
    if isinstance(kept, str):
        return kept
    return serving_revision(((serving.get("spec") or {}).get("template") or {}).get("roles") or [])


def pod_ready(pod: JSON) -> bool:
    """Phase Running and the Ready condition True (what a kubelet would report)."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    """An IntOrString against ``total`` (percentages rounded up or down); 0 when unset."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        scaled = int(text[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(text)


def label_selector(name: str, roles: list[JSON]) -> str:
    """One entry pod per ServingGroup, so the scale subresource counts groups (§6.7)."""
    first = roles[0]["name"] if roles else ""
    parts = {MS_ENTRY: ENTRY_VALUE, MS_NAME: name, MS_ROLE: first, MS_ROLE_ID: f"{first}-0"}
    return ",".join(f"{k}={v}" for k, v in sorted(parts.items()))


@dataclass
class Group:
    """One ServingGroup as its pods show it."""

    ordinal: int
    pods: list[JSON] = field(default_factory=list)

    @property
    def live(self) -> list[JSON]:
        return [p for p in self.pods if not (p.get("metadata") or {}).get("deletionTimestamp")]

    @property
    def deleting(self) -> bool:
        return not self.live

    def revision(self, update_revision: str) -> str:
        """The update revision only when every live pod carries it, else the most common other one."""
        revisions = Counter(((p["metadata"].get("labels") or {}).get(MS_REVISION, "")) for p in self.live)
        if set(revisions) == {update_revision}:
            return update_revision
        others = [(n, r) for r, n in revisions.items() if r != update_revision]
        return max(others)[1] if others else update_revision

    def running(self, name: str, roles: list[JSON]) -> bool:
        instances: dict[str, dict[str, list[JSON]]] = defaultdict(lambda: defaultdict(list))
        for pod in self.live:
            slot = pod_slot(name, str(pod["metadata"].get("name") or ""))
            if slot is not None:
                instances[slot.role][slot.role_id].append(pod)
        for role in roles:
            want = int(role.get("replicas", 1) if role.get("replicas") is not None else 1)
            per_instance = 1 + int(role.get("workerReplicas") or 0)
            found = instances.get(role["name"], {})
            if len(found) != want:
                return False
            for pods in found.values():
                if len(pods) != per_instance or not all(pod_ready(p) for p in pods):
                    return False
        return True


def groups_of(name: str, pods: list[JSON]) -> list[Group]:
    """Pods grouped by ServingGroup ordinal, sorted numerically.

    Group, role and role instance come from the pod's name, which Ferry chose and nobody can
    change afterwards, not from labels (user-writable copies of it); the caller keeps only pods
    whose ownerReference names the ModelServing.
    """
    groups: dict[int, Group] = {}
    for pod in pods:
        slot = pod_slot(name, str((pod.get("metadata") or {}).get("name") or ""))
        if slot is None:
            continue
        groups.setdefault(slot.group, Group(slot.group)).pods.append(pod)
    return [groups[o] for o in sorted(groups)]


def compute_serving_status(
    serving: JSON,
    pods: list[JSON],
    update_revision: str | None,
    *,
    outcome: Outcome | None = None,
    at: str | None = None,
) -> JSON:
    """The complete ``status`` a ModelServing should have, given its pods and current revision.

    ``outcome`` is what the pipeline said: a refusal (a plugin the converter cannot build, a pod the
    API server rejects) shows as ``Failed`` with the reason and message, and is cleared once the
    cause is gone (Kthena only logs it).
    """
    meta = serving.get("metadata") or {}
    spec = serving.get("spec") or {}
    old: JSON = serving.get("status") or {}
    name = meta["name"]
    roles: list[JSON] = list((spec.get("template") or {}).get("roles") or [])
    want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    groups = groups_of(name, pods)
    rev = update_revision or _most_common_revision(groups) or old.get("updateRevision") or ""

    available = updated = current = 0
    progressing: list[int] = []
    updated_list: list[int] = []
    current_list: list[int] = []
    old_revisions: Counter[str] = Counter()
    for index, group in enumerate(groups):
        if group.deleting:
            progressing.append(index)
            continue
        if group.running(name, roles):
            available += 1
        else:
            progressing.append(index)
        group_rev = group.revision(rev)
        if group_rev == rev:
            updated += 1
            updated_list.append(index)
        else:
            current += 1
            current_list.append(index)
            old_revisions[group_rev] += 1
    present = {g.ordinal for g in groups}
    missing = [o for o in range(want) if o not in present]

    rolling = (spec.get("rolloutStrategy") or {}).get("rollingUpdateConfiguration") or {}
    partition_raw = rolling.get("partition")
    partition = resolve_int_or_percent(partition_raw, want, round_up=True)

    conditions: list[Condition] = list(old.get("conditions") or [])
    if not progressing and not missing:
        new = condition("Available", True, REASON_AVAILABLE, "All Serving groups are ready")
    else:
        listed = " ".join(str(i) for i in progressing + missing)
        message = f"Some groups is progressing: [{listed}]"
        if len(current_list) > partition:
            new = condition(
                "UpdateInProgress",
                True,
                REASON_UPDATING,
                f"{message}, Updated Groups are: [{' '.join(str(i) for i in updated_list)}]",
            )
        else:
            new = condition("Progressing", True, REASON_PROGRESSING, message)
    conditions = merge_serving_condition(conditions, new, at=at)
    if outcome is not None and outcome.failed:
        failed = condition("Failed", True, outcome.reason or "ApplyFailed", outcome.message)
        conditions = merge_condition(conditions, failed, at=at)
    elif any(c.get("type") == "Failed" and c.get("status") == "True" for c in conditions):
        recovered = condition("Failed", False, "Recovered", "the cause of the failure is gone")
        conditions = merge_condition(conditions, recovered, at=at)

    current_revision = str(old.get("currentRevision") or "")
    if groups and updated == len(groups):
        current_revision = rev
    elif current_revision not in old_revisions:
        current_revision = old_revisions.most_common(1)[0][0] if old_revisions else rev
    replicas = len(groups)
    if partition_raw is None and updated == available == replicas == want:
        current = updated

    status: JSON = {
        "observedGeneration": meta.get("generation"),
        "replicas": replicas,
        "availableReplicas": available,
        "updatedReplicas": updated,
        "currentReplicas": current,
        "currentRevision": current_revision,
        "updateRevision": rev,
        "labelSelector": label_selector(name, roles),
        "conditions": conditions,
    }
    return {k: v for k, v in status.items() if v is not None}


def _most_common_revision(groups: list[Group]) -> str:
    counts = Counter((p["metadata"].get("labels") or {}).get(MS_REVISION, "") for g in groups for p in g.live)
    counts.pop("", None)
    return counts.most_common(1)[0][0] if counts else ""
