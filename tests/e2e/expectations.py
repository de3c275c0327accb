"""What the cluster should hold for a ModelServing or a ModelBooster (names from the specs)."""

from __future__ import annotations

from typing import Any

from ferry_schemas import labels as L

JSON = dict[str, Any]


def backends_of(booster: JSON) -> list[JSON]:
    spec = booster["spec"]
    return list(spec.get("backends") or [spec["backend"]])


def expected_pods(serving: JSON) -> set[str]:
    """Every pod name the serving spec asks for (serving.md §2.1)."""
    spec = serving["spec"]
    names = set()
    for g in range(int(spec.get("replicas", 1))):
        group = L.group_name(serving["metadata"]["name"], g)
        for role in spec["template"]["roles"]:
            for r in range(int(role.get("replicas", 1))):
                for p in range(1 + int(role.get("workerReplicas") or 0)):
                    names.add(L.pod_name(group, L.role_id(role["name"], r), p))
    return names


def expected_pod_groups(serving: JSON) -> dict[str, int]:
    """PodGroup name → minMember, only for the volcano scheduler (serving.md §3)."""
    spec = serving["spec"]
    if spec.get("schedulerName", "volcano") != "volcano":
        return {}
    template = spec["template"]
    minimums = ((template.get("gangPolicy") or {}).get("minRoleReplicas")) or {}
    members = 0
    for role in template["roles"]:
        replicas = int(role.get("replicas", 1))
        mrr = min(int(minimums[role["name"]]), replicas) if role["name"] in minimums else replicas
        members += (1 + int(role.get("workerReplicas") or 0)) * mrr
    return {
        L.group_name(serving["metadata"]["name"], g): members for g in range(int(spec.get("replicas", 1)))
    }


def controller_owner(obj: JSON) -> JSON:
    refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")]
    assert len(refs) == 1, f"{obj['kind']} {obj['metadata']['name']} has controller refs {refs}"
    return refs[0]


def assert_owned_by(obj: JSON, owner: JSON) -> None:
    ref = controller_owner(obj)
    assert ref["uid"] == owner["metadata"]["uid"]
    assert ref["kind"] == owner["kind"]
    assert ref["name"] == owner["metadata"]["name"]


def assert_booster_child_labels(obj: JSON, booster: JSON, backend: str) -> None:
    labels = obj["metadata"].get("labels") or {}
    assert labels.get(L.BOOSTER_MODEL_NAME) == booster["metadata"]["name"]
    assert labels.get(L.BOOSTER_BACKEND_NAME) == backend
    assert labels.get(L.BOOSTER_MANAGED_BY) == L.BOOSTER_MANAGED_BY_VALUE
    assert labels.get(L.BOOSTER_MODEL_UID) == booster["metadata"]["uid"]
    assert labels.get(L.BOOSTER_REVISION)
