"""Kubernetes Events on the owner for what the applier did (design rule 9).

``kubectl describe modelbooster X`` / ``modelserving Y`` then lists children created, updated and
pruned, pods created and deleted (scale, rolling update, recovery), refusals and failed reconciles.
Unchanged children make no Event. One apply result makes at most one Event per reason (its note names
every child with that action), and the recorder aggregates an owner's Events per reason into a
series, so a booster's creation costs one ``Created`` Event, not one per child.
"""

from __future__ import annotations

from ferry_schemas.bus import ApplyResult, ChildResult, OwnerKey
from ferry_schemas.runtime.events import EventRecorder

ACTIONS: dict[str, tuple[str, str, str]] = {
    # child action → (reason, action, verb in the note)
    "created": ("Created", "Create", "created"),
    "applied": ("Updated", "Update", "updated"),
    "pruned": ("Pruned", "Delete", "pruned (no longer desired)"),
    "deleted": ("Deleted", "Delete", "deleted"),
}


def owner_reference(owner: OwnerKey) -> dict[str, str]:
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "namespace": owner.namespace,
        "name": owner.name,
        "uid": owner.uid,
    }


def child_note(child: ChildResult, verb: str) -> str:
    note = f"{child.kind} {child.name} {verb}"
    return f"{note}: {child.message}" if child.message else note


def record_events(events: EventRecorder, result: ApplyResult) -> None:
    """One Event per kind of change (created, updated, pruned, deleted) naming every child it
    touched, and a Warning when the owner's set was refused."""
    regarding = owner_reference(result.owner)
    notes: dict[str, list[str]] = {}
    for child in result.children:
        if child.action in ACTIONS:
            notes.setdefault(child.action, []).append(child_note(child, ACTIONS[child.action][2]))
    for child_action, changed in notes.items():
        reason, action, _ = ACTIONS[child_action]
        events.record(regarding, reason=reason, action=action, note="; ".join(changed))
    if not result.ok:
        events.record(
            regarding,
            type="Warning",
            reason=result.reason or "ApplyFailed",
            action="Apply",
            note=result.message or "the desired children were refused",
        )


def record_failure(events: EventRecorder, owner: OwnerKey, exc: BaseException) -> None:
    """A reconcile that failed and will be retried (aggregated: one Event, counted)."""
    events.record(
        owner_reference(owner),
        type="Warning",
        reason="ReconcileError",
        action="Reconcile",
        note=f"{type(exc).__name__}: {str(exc)[:300]} (retrying with back-off)",
    )
