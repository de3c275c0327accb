"""Pod events waiting for their owner's next reconcile, which applies the recovery policy to them.

Kept per pod *uid*, not per name: a lost pod and the pod that replaced it share a name, and the
replacement's events (bound, Running, Ready) must never hide the lost pod's tombstone — the
tombstone is what makes ``ServingGroupRecreate`` rebuild the group when a reconcile has already
recreated the lost pod alone (``Reconciler.recover``, ``replaced_alone``). Events of one uid do
supersede each other: its latest state is what recovery looks at.
"""

from __future__ import annotations

from collections.abc import Iterable

from ferry_schemas.bus import ObjectEvent

from ferry_applier.reconciler import OwnerRef


class PendingPodEvents:
    def __init__(self) -> None:
        self._by_owner: dict[OwnerRef, dict[str, ObjectEvent]] = {}

    def add(self, owner: OwnerRef, event: ObjectEvent) -> None:
        """A new event: it replaces an earlier one of the same pod, except that a tombstone stays."""
        events = self._by_owner.setdefault(owner, {})
        key = _key(event)
        if not (key in events and events[key].deleted):
            events[key] = event

    def restore(self, owner: OwnerRef, events: Iterable[ObjectEvent]) -> None:
        """Events a reconcile took but must look at again (it failed, or a grace period runs):
        anything newer that arrived meanwhile wins."""
        pending = self._by_owner.setdefault(owner, {})
        for event in events:
            pending.setdefault(_key(event), event)

    def take(self, owner: OwnerRef) -> list[ObjectEvent]:
        """Every pending event of ``owner``, removed, oldest pod first."""
        return list(self._by_owner.pop(owner, {}).values())

    def drop(self, owner: OwnerRef) -> None:
        self._by_owner.pop(owner, None)


def _key(event: ObjectEvent) -> str:
    return event.uid or f"name:{event.name}"
