"""metav1.Condition handling: the shared helpers, plus Kthena's ModelServing-specific merge."""

from __future__ import annotations

from ferry_schemas.conditions import (
    Condition,
    condition,
    find,
    is_true,
    merge_condition,
    now_rfc3339,
    without_times,
)

__all__ = [
    "SERVING_EXCLUSIVE",
    "Condition",
    "condition",
    "find",
    "is_true",
    "merge_condition",
    "merge_serving_condition",
    "now_rfc3339",
    "without_times",
]


SERVING_EXCLUSIVE: dict[str, tuple[str, ...]] = {
    "Available": ("Progressing", "UpdateInProgress"),
    "Progressing": ("Available",),
    "UpdateInProgress": ("Available",),
}


def merge_serving_condition(
    conditions: list[Condition], new: Condition, *, at: str | None = None
) -> list[Condition]:
    """Kthena's ModelServing rule (serving.md §6.7): a same-type condition is replaced only when
    its status differs (so messages are not refreshed); a mutually exclusive condition that is
    True has only its status flipped to False."""
    stamp = at or now_rfc3339()
    exclusive = SERVING_EXCLUSIVE.get(new["type"], ())
    out: list[Condition] = []
    present = False
    for existing in conditions:
        kind = existing.get("type")
        if kind == new["type"]:
            present = True
            out.append(
                {**new, "lastTransitionTime": stamp} if existing.get("status") != new["status"] else existing
            )
        elif kind in exclusive and existing.get("status") == "True":
            out.append({**existing, "status": "False", "lastTransitionTime": stamp})
        else:
            out.append(existing)
    if not present:
        out.append({**new, "lastTransitionTime": stamp})
    return out
