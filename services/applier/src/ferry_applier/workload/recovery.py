"""What to do when a pod of a ServingGroup fails or disappears (spec/serving.md §6.4), as values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferry_schemas import labels as L

from ferry_applier.workload.plan import DeleteGroup, DeleteInstance
from ferry_applier.workload.spec import RECOVERY_NONE, SERVING_GROUP_RECREATE


@dataclass(frozen=True)
class PodAddress:
    """Where a pod sits in its ModelServing: group ordinal, role, role ordinal."""

    serving: str
    group: int
    role: str
    role_ordinal: int

    @classmethod
    def of(cls, pod: dict[str, Any]) -> PodAddress | None:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        serving = labels.get(L.MS_NAME, "")
        _, group = L.parse_ordinal(labels.get(L.MS_GROUP_NAME, ""))
        role = labels.get(L.MS_ROLE, "")
        _, role_ordinal = L.parse_ordinal(labels.get(L.MS_ROLE_ID, ""))
        if not serving or group < 0 or not role or role_ordinal < 0:
            return None
        return cls(serving, group, role, role_ordinal)


def recovery_action(policy: str, address: PodAddress) -> DeleteGroup | DeleteInstance | None:
    """The deletion a lost pod causes: the whole group, its role instance, or nothing.

    After it, the ordinary reconcile recreates what is missing (the group or instance at the same
    ordinal; under ``None`` only the lost pod itself).
    """
    if policy == SERVING_GROUP_RECREATE:
        return DeleteGroup(address.group, "ServingGroupRecreate")
    if policy == RECOVERY_NONE:
        return None
    return DeleteInstance(address.group, address.role, address.role_ordinal, "RoleRecreate")


def failed_since(pod: dict[str, Any], fallback: datetime) -> datetime:
    """When the pod stopped being healthy: its Ready condition's last transition, else ``fallback``."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") != "True" and cond.get("lastTransitionTime"):
            try:
                return datetime.fromisoformat(str(cond["lastTransitionTime"]).replace("Z", "+00:00"))
            except ValueError:
                break
    return fallback


def grace_remaining(since: datetime, grace_seconds: int, now: datetime) -> float:
    """Seconds left of ``restartGracePeriodSeconds`` before a failed pod is deleted (0 = now)."""
    if grace_seconds <= 0:
        return 0.0
    return max(0.0, grace_seconds - (now - since).total_seconds())
