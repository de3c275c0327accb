"""What the workload decisions need from a ServingWorkload blueprint (spec/serving.md §1.2-§1.5)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

SERVING_GROUP_ROLLING_UPDATE = "ServingGroupRollingUpdate"
ROLE_ROLLING_UPDATE = "RoleRollingUpdate"
SERVING_GROUP_RECREATE = "ServingGroupRecreate"
ROLE_RECREATE = "RoleRecreate"
RECOVERY_NONE = "None"

IntOrPercent = int | str | None
_PERCENT = re.compile(r"^\s*([0-9]+)%\s*$")


def resolve(value: IntOrPercent, total: int, *, round_up: bool) -> int:
    """Resolve an IntOrString against ``total``: ints as they are, ``"N%"`` rounded up or down.

    ``None`` resolves to 0. A malformed string raises ValueError (the caller decides what that means).
    """
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"not an int or percentage: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value)
    match = _PERCENT.match(text)
    if match is None:
        if text.strip().isdigit():
            return int(text)
        raise ValueError(f"not an int or percentage: {value!r}")
    scaled = int(match.group(1)) * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def resolve_partition(value: IntOrPercent, total: int) -> int:
    """A partition: percentages of ``total`` round up (Kthena's ``getPartition``); never negative."""
    try:
        return max(0, resolve(value, total, round_up=True))
    except ValueError:
        return 0


@dataclass(frozen=True)
class RoleSpec:
    name: str
    replicas: int
    worker_replicas: int
    max_unavailable: IntOrPercent = 1
    partition: IntOrPercent = None

    @property
    def pods_per_instance(self) -> int:
        return 1 + self.worker_replicas


@dataclass(frozen=True)
class WorkloadSpec:
    """The ModelServing fields the applier's decisions read."""

    replicas: int
    roles: tuple[RoleSpec, ...]
    rollout_type: str = SERVING_GROUP_ROLLING_UPDATE
    max_unavailable: IntOrPercent = 1
    partition: IntOrPercent = None
    recovery_policy: str = ROLE_RECREATE
    restart_grace_period_seconds: int = 0
    scheduler_name: str = "volcano"

    def role(self, name: str) -> RoleSpec | None:
        return next((role for role in self.roles if role.name == name), None)

    @property
    def group_partition(self) -> int:
        """ServingGroup-level partition (only under ServingGroupRollingUpdate)."""
        if self.rollout_type != SERVING_GROUP_ROLLING_UPDATE:
            return 0
        return resolve_partition(self.partition, self.replicas)

    def role_partition(self, role: RoleSpec) -> int:
        """Role-level partition (only under RoleRollingUpdate)."""
        if self.rollout_type != ROLE_ROLLING_UPDATE:
            return 0
        return resolve_partition(role.partition, role.replicas)

    @property
    def has_partition(self) -> bool:
        """Some groups or role instances are partition-protected (they keep an old revision)."""
        return self.group_partition > 0 or any(self.role_partition(role) > 0 for role in self.roles)

    @property
    def group_max_unavailable(self) -> int:
        """ServingGroup maxUnavailable, a percentage of replicas rounded down, at least 1.

        Kthena's webhook refuses a value resolving to 0; a replica change can still make one,
        and a rollout that can never progress helps nobody, so Ferry uses 1 then.
        """
        try:
            value = resolve(
                self.max_unavailable if self.max_unavailable is not None else 1, self.replicas, round_up=False
            )
        except ValueError:
            value = 1
        return max(1, value)

    @classmethod
    def from_serving_spec(cls, spec: dict[str, Any]) -> WorkloadSpec:
        """Read a ModelServing ``spec`` (camelCase, as the API server stores it)."""
        template = spec.get("template") or {}
        rollout = spec.get("rolloutStrategy") or {}
        rolling = rollout.get("rollingUpdateConfiguration") or {}
        roles = tuple(
            RoleSpec(
                name=str(role["name"]),
                replicas=_int(role.get("replicas"), 1),
                worker_replicas=_int(role.get("workerReplicas"), 0),
                max_unavailable=role.get("maxUnavailable", 1),
                partition=role.get("partition"),
            )
            for role in template.get("roles") or []
        )
        return cls(
            replicas=_int(spec.get("replicas"), 1),
            roles=roles,
            rollout_type=str(rollout.get("type") or SERVING_GROUP_ROLLING_UPDATE),
            max_unavailable=rolling.get("maxUnavailable", 1),
            partition=rolling.get("partition"),
            recovery_policy=str(spec.get("recoveryPolicy") or ROLE_RECREATE),
            restart_grace_period_seconds=_int(template.get("restartGracePeriodSeconds"), 0),
            scheduler_name=str(
                spec.get("schedulerName") if spec.get("schedulerName") is not None else "volcano"
            ),
        )


def _int(value: Any, default: int) -> int:
    if value is None:
        return default
    return int(value)
