"""``metav1.Condition`` handling every status writer shares: keep ``lastTransitionTime`` unless the
status flips, and compare statuses without the timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Condition = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: bool, reason: str, message: str) -> Condition:
    """A condition without a transition time (filled in by :func:`merge_condition`)."""
    return {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message}


def find(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.get("status") == "True"


def merge_condition(conditions: list[Condition], new: Condition, *, at: str | None = None) -> list[Condition]:
    """``meta.SetStatusCondition``: match by type; reason/message follow the new value,
    ``lastTransitionTime`` changes only when the status changes (or the condition is new)."""
    out: list[Condition] = []
    replaced = False
    for existing in conditions:
        if existing.get("type") != new["type"]:
            out.append(existing)
            continue
        replaced = True
        merged = {**existing, **new}
        if existing.get("status") != new["status"] or not existing.get("lastTransitionTime"):
            merged["lastTransitionTime"] = at or now_rfc3339()
        else:
            merged["lastTransitionTime"] = existing["lastTransitionTime"]
        out.append(merged)
    if not replaced:
        out.append({**new, "lastTransitionTime": at or now_rfc3339()})
    return out


def without_times(value: Any) -> Any:
    """``value`` minus ``lastTransitionTime`` everywhere (to compare a new status with the stored one)."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value
