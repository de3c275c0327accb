"""Volcano's PodGroup (``scheduling.volcano.sh/v1beta1``): the gang of one serving group.

Ferry writes it (``spec/serving.md`` §3) and ships a CRD for clusters without Volcano.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from .meta import KubeModel, KubeObject, replace_schema
from .serving import NetworkTopologySpec

SCHEDULING_GROUP = "scheduling.volcano.sh"

RESOURCE_LIST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {
        "x-kubernetes-int-or-string": True,
        "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
        r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
    },
}


class SubGroupPolicy(KubeModel):
    name: str = Field(max_length=253)
    """Sub-group (role) name."""
    sub_group_size: int | None = Field(None, ge=0)
    """Pods per sub-group."""
    min_sub_groups: int | None = Field(None, ge=0)
    """Sub-groups that must be schedulable together."""
    label_selector: dict[str, Any] | None = None
    """Pods of the sub-group."""
    match_label_keys: list[str] | None = None
    """Label keys whose values split pods into sub-groups."""
    network_topology: NetworkTopologySpec | None = None
    """Network-topology constraint of each sub-group."""


class PodGroupSpec(KubeModel):
    min_member: int | None = Field(None, ge=0)
    """Pods that must be schedulable together."""
    min_task_member: dict[str, int] | None = None
    """Pods per task that must be schedulable together."""
    min_resources: dict[str, int | str] | None = Field(None, json_schema_extra=replace_schema(RESOURCE_LIST))
    """Resources the gang needs in total."""
    queue: str | None = None
    """Volcano queue of the group."""
    priority_class_name: str | None = None
    """Priority of the group."""
    network_topology: NetworkTopologySpec | None = None
    """Network-topology constraint of the whole group."""
    sub_group_policy: list[SubGroupPolicy] | None = None
    """Gang constraints per role (sub-groups)."""


class PodGroupCondition(KubeModel):
    type: str | None = None
    status: str | None = None
    transition_id: str | None = Field(None, alias="transitionID")
    last_transition_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    reason: str | None = None
    message: str | None = None


class PodGroupStatus(KubeModel):
    phase: str | None = None
    """Pending, Running, Unknown, Inqueue or Completed."""
    conditions: list[PodGroupCondition] | None = None
    running: int | None = None
    succeeded: int | None = None
    failed: int | None = None


class PodGroup(KubeObject):
    GROUP: ClassVar[str] = SCHEDULING_GROUP
    VERSION: ClassVar[str] = "v1beta1"
    KIND: ClassVar[str] = "PodGroup"
    PLURAL: ClassVar[str] = "podgroups"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("pg", "podgroup-v1beta1")

    spec: PodGroupSpec | None = None
    status: PodGroupStatus | None = None
