"""Pending pod events: a replacement's events never hide the lost pod's tombstone."""

from __future__ import annotations

from typing import Any

from ferry_applier.pending import PendingPodEvents
from ferry_schemas.bus import EventType, ObjectEvent

OWNER = ("modelservings", "ns", "ms")


def event(kind: EventType, pod: dict[str, Any], rv: str) -> ObjectEvent:
    pod = {**pod, "metadata": {**pod["metadata"], "resourceVersion": rv}}
    return ObjectEvent.from_object(kind, "pods", pod)


def test_the_replacements_events_do_not_hide_the_lost_pods_tombstone(make_pod: Any) -> None:
    lost = make_pod("ms", 0, "prefill", 0)
    replacement = make_pod("ms", 0, "prefill", 0)
    replacement["metadata"]["uid"] = "uid-new"
    pending = PendingPodEvents()
    pending.add(OWNER, event("DELETED", lost, "5"))
    pending.add(OWNER, event("MODIFIED", replacement, "7"))  # same name, bound and Running
    pending.add(OWNER, event("MODIFIED", replacement, "8"))
    taken = pending.take(OWNER)
    assert [(e.uid, e.type, e.resource_version) for e in taken] == [
        (lost["metadata"]["uid"], "DELETED", "5"),
        ("uid-new", "MODIFIED", "8"),  # one pod's later state supersedes its earlier one
    ]
    assert pending.take(OWNER) == []


def test_a_tombstone_stays_and_restored_events_yield_to_newer_ones(make_pod: Any) -> None:
    pod = make_pod("ms", 0, "decode", 0)
    pending = PendingPodEvents()
    pending.add(OWNER, event("DELETED", pod, "9"))
    pending.add(OWNER, event("MODIFIED", pod, "10"))  # a late update of the same uid
    (kept,) = pending.take(OWNER)
    assert kept.deleted

    failed = event("MODIFIED", pod, "3")
    pending.add(OWNER, event("MODIFIED", pod, "4"))  # arrived while the reconcile ran
    pending.restore(OWNER, [failed])  # the reconcile failed: look at its events again
    (newest,) = pending.take(OWNER)
    assert newest.resource_version == "4"
    pending.restore(OWNER, [failed])
    pending.drop(OWNER)
    assert pending.take(OWNER) == []
