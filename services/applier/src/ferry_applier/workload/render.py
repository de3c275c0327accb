"""The bridge to ``ferry_schemas.workload``: the decisions' view of a blueprint, and rendering."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ferry_schemas import workload as shared
from ferry_schemas.bus import OwnerKey, ServingWorkload

from ferry_applier.workload.spec import WorkloadSpec


def read_spec(workload: ServingWorkload) -> WorkloadSpec:
    """The ModelServing fields the decisions need, from the converter's blueprint."""
    bp = workload.blueprint
    spec: dict[str, Any] = {
        "replicas": workload.replicas,
        "schedulerName": bp.get("schedulerName") or "",
        "template": bp.get("template") or {},
        "rolloutStrategy": bp.get("rolloutStrategy"),
        "recoveryPolicy": bp.get("recoveryPolicy"),
    }
    return replace(WorkloadSpec.from_serving_spec(spec), replicas=workload.replicas)


def render_group(workload: ServingWorkload, owner: OwnerKey, ordinal: int) -> list[dict[str, Any]]:
    """Every object of ServingGroup ``ordinal`` (the blueprint already names ``owner``)."""
    del owner  # the blueprint carries the owner; kept in the signature for the engine's protocol
    return shared.render_group(workload, ordinal)
