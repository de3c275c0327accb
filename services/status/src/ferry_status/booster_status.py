"""ModelBooster status from its ModelServings and the pipeline's outcome, as a pure function.

Conditions (spec/booster.md §1.3, design §1): ``Initialized`` once the children are applied,
``Active`` when every ModelServing is Available, ``Failed`` with the converter's or the applier's
message — set back to False when the cause is gone (Kthena never clears it) — and, for
prefill/decode backends, ``Disaggregated`` (seed 004). The seed-004 counts are the sums over the
ModelServings.
"""

from __future__ import annotations

from typing import Any

from ferry_schemas.labels import booster_child_name

from ferry_status.bus_state import DesiredRecord, ResultRecord
from ferry_status.conditions import Condition, condition, find, is_true, merge_condition
from ferry_status.outcome import Outcome, pipeline_outcome

JSON = dict[str, Any]

DISAGGREGATED_TYPE = "vLLMDisaggregated"
COUNTS = ("replicas", "availableReplicas", "updatedReplicas", "currentReplicas")


def backends(booster: JSON) -> list[JSON]:
    spec = booster.get("spec") or {}
    if spec.get("backends"):
        return list(spec["backends"])
    return [spec["backend"]] if spec.get("backend") else []


def expected_servings(booster: JSON, desired: DesiredRecord | None) -> set[str]:
    """ModelServing names this booster should have (from the desired set when there is one)."""
    if desired is not None and not desired.errors and desired.uid == booster["metadata"].get("uid"):
        return set(desired.servings)
    name = booster["metadata"]["name"]
    return {booster_child_name(name, b.get("name", "")) for b in backends(booster)}


def serving_available(serving: JSON | None) -> bool:
    return serving is not None and is_true((serving.get("status") or {}).get("conditions") or [], "Available")


def serving_failure(by_name: dict[str, JSON], expected: set[str]) -> Outcome | None:
    """A ModelServing of the booster that is ``Failed`` (e.g. a pod the API server refuses) fails it too."""
    for name in sorted(expected):
        conditions = ((by_name.get(name) or {}).get("status") or {}).get("conditions") or []
        failed = find(conditions, "Failed")
        if failed is not None and failed.get("status") == "True":
            return Outcome(
                True, f"ModelServing {name}: {failed.get('message') or failed.get('reason')}", False
            )
    return None


def unschedulable(pods: list[JSON]) -> str | None:
    """Why the first pod the scheduler cannot place waits (``PodScheduled`` False, ``Unschedulable``:
    no node fits it, or its gang cannot be met)."""
    for pod in sorted(pods, key=lambda p: str(p["metadata"].get("name"))):
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if (cond.get("type"), cond.get("status"), cond.get("reason")) == (
                "PodScheduled",
                "False",
                "Unschedulable",
            ):
                return f"pod {pod['metadata'].get('name')} is Unschedulable: {cond.get('message') or ''}"
    return None


def not_ready_message(by_name: dict[str, JSON], expected: set[str], pods: dict[str, list[JSON]]) -> str:
    """Kthena's "not ready yet", plus why when a waiting ModelServing has a pod the scheduler cannot
    place (``pods`` by ModelServing name): a booster Pending for good says so."""
    for name in sorted(expected):
        if serving_available(by_name.get(name)):
            continue
        if why := unschedulable(pods.get(name, [])):
            return f"ModelBooster not ready yet: ModelServing {name}: {why}"
    return "ModelBooster not ready yet"


def compute_booster_status(
    booster: JSON,
    servings: list[JSON],
    desired: DesiredRecord | None,
    result: ResultRecord | None,
    *,
    pods: dict[str, list[JSON]] | None = None,
    at: str | None = None,
) -> JSON:
    """The complete ``status`` the booster should have (``pods``: each ModelServing's, by name)."""
    meta = booster["metadata"]
    old: JSON = booster.get("status") or {}
    conditions: list[Condition] = list(old.get("conditions") or [])
    seen = int(old.get("observedGeneration") or 0)
    if desired is not None and desired.uid == meta.get("uid") and desired.generation < seen:
        desired = None  # a stale replay (e.g. a slow watcher's old event) never moves status backwards
    outcome = pipeline_outcome(booster, desired, result)
    by_name = {s["metadata"]["name"]: s for s in servings}
    expected = expected_servings(booster, desired)
    if not outcome.failed:
        outcome = serving_failure(by_name, expected) or outcome

    if outcome.applied or is_true(conditions, "Initialized"):
        conditions = merge_condition(
            conditions, condition("Initialized", True, "ModelCreating", "ModelBooster initialized"), at=at
        )
    all_available = bool(expected) and all(serving_available(by_name.get(n)) for n in expected)
    active = all_available and not outcome.failed
    conditions = merge_condition(
        conditions,
        condition("Active", True, "ModelAvailable", "ModelBooster is ready")
        if active
        else condition("Active", False, "ModelProcessing", not_ready_message(by_name, expected, pods or {})),
        at=at,
    )
    if outcome.failed:
        conditions = merge_condition(
            conditions, condition("Failed", True, "ModelAbnormal", outcome.message), at=at
        )
    elif any(c.get("type") == "Failed" for c in conditions):
        conditions = merge_condition(
            conditions,
            condition("Failed", False, "ModelRecovered", "the cause of the failure is gone"),
            at=at,
        )
    pd = [b for b in backends(booster) if b.get("type") == DISAGGREGATED_TYPE]
    if pd:
        names = [booster_child_name(meta["name"], b.get("name", "")) for b in pd]
        if all(serving_available(by_name.get(n)) for n in names):
            new = condition(
                "Disaggregated", True, "DisaggregationActive", "Prefill-decode disaggregation is active"
            )
        else:
            new = condition(
                "Disaggregated", False, "DisaggregationPending", "Waiting for the prefill and decode workers"
            )
        conditions = merge_condition(conditions, new, at=at)

    status: JSON = {"conditions": conditions}
    for key in COUNTS:
        status[key] = sum(
            int((s.get("status") or {}).get(key) or 0) for s in servings if s["metadata"]["name"] in expected
        )
    generation = desired.generation if desired is not None and desired.uid == meta.get("uid") else None
    status["observedGeneration"] = generation if generation is not None else old.get("observedGeneration")
    return {k: v for k, v in status.items() if v is not None}
