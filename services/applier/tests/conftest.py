"""Builders for pods as the API server returns them (only what the applier reads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from ferry_schemas import labels as L


def make_pod(
    ms: str,
    group: int,
    role: str,
    role_ordinal: int,
    index: int = 0,
    *,
    revision: str = "new",
    role_hash: str | None = None,
    ready: bool = True,
    terminating: bool = False,
    phase: str | None = None,
    cost: int | None = None,
    restarts: int = 0,
) -> dict[str, Any]:
    group_name = L.group_name(ms, group)
    rid = L.role_id(role, role_ordinal)
    meta: dict[str, Any] = {
        "name": L.pod_name(group_name, rid, index),
        "uid": f"uid-{group}-{rid}-{index}",
        "labels": {
            L.MS_NAME: ms,
            L.MS_GROUP_NAME: group_name,
            L.MS_ROLE: role,
            L.MS_ROLE_ID: rid,
            L.MS_REVISION: revision,
            L.MS_ROLE_TEMPLATE_HASH: role_hash if role_hash is not None else f"{role}-{revision}",
        },
    }
    if cost is not None:
        meta["annotations"] = {L.POD_DELETION_COST_ANNOTATION: str(cost)}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-22T00:00:00Z"
    status: dict[str, Any] = {
        "phase": phase or ("Running" if ready else "Pending"),
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if restarts:
        status["containerStatuses"] = [{"name": "c", "restartCount": restarts}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}


PodFactory = Callable[..., dict[str, Any]]


@pytest.fixture(name="make_pod")
def make_pod_fixture() -> PodFactory:
    return make_pod


@pytest.fixture
def groups() -> PodFactory:
    """Single-pod groups (role ``prefill``) of ModelServing ``ms``, one per ordinal."""

    def build(*ordinals: int, **kw: Any) -> list[dict[str, Any]]:
        return [pod for g in ordinals for pod in [make_pod("ms", g, "prefill", 0, **kw)]]

    return build
