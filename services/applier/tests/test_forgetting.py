"""What the applier keeps per owner is dropped once the owner has no desired set any more, and what it
remembers of a reconcile's writes tells their echoes from drift."""

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from ferry_applier.kube import Written
from ferry_applier.service import RECORD_LEASE, Applier
from ferry_applier.settings import ApplierSettings
from ferry_schemas.bus import ObjectEvent
from ferry_schemas.runtime.view import Change


async def test_an_owner_without_a_desired_set_leaves_nothing_behind() -> None:
    applier = Applier(ApplierSettings(), kube=None)  # type: ignore[arg-type]
    applier._reconciler = applier.view = applier._leases = applier._records = object()  # type: ignore[assignment]
    gone, kept = ("modelservings", "ns", "gone"), ("modelservings", "ns", "kept")
    applier._written[gone] = [Written("pods", "ns", "gone-0", resource_version=5)]
    applier._written[kept] = [Written("pods", "ns", "kept-0", resource_version=6)]

    async def no_desired_set(resource: str, namespace: str, name: str) -> Any:
        return None

    applier._last_desired = no_desired_set  # type: ignore[method-assign]
    await applier._reconcile(gone, None)
    assert gone not in applier._written  # its writes are never waited for or compared again
    assert applier._written[kept][0].name == "kept-0"
    await applier.queue.stop()


def test_the_previous_release_lease_is_taken_until_every_replica_is_known_to_hold_by_record() -> None:
    applier = Applier(ApplierSettings(), kube=None)  # type: ignore[arg-type]
    assert applier._legacy_lease_needed()  # nobody known yet

    class Marked:
        def all_marked(self, mark: bytes) -> bool:
            return mark == RECORD_LEASE

    applier._members = Marked()  # type: ignore[assignment]
    assert not applier._legacy_lease_needed()
    applier.settings = replace(applier.settings, legacy_lease=True)  # before a roll-back
    assert applier._legacy_lease_needed()


def _pod_event(name: str, version: str) -> ObjectEvent:
    ref = {
        "apiVersion": "v1alpha1",
        "kind": "ModelServing",
        "name": "ms",
        "uid": "ms-uid",
        "controller": True,
    }
    meta = {"name": name, "namespace": "ns", "uid": f"{name}-uid", "resourceVersion": version}
    return ObjectEvent.from_object("ADDED", "pods", {"metadata": {**meta, "ownerReferences": [ref]}})


async def test_a_change_heard_while_its_owner_writes_is_decided_once_the_answers_are_in() -> None:
    applier = Applier(ApplierSettings(), kube=None)  # type: ignore[arg-type]
    applier.view = SimpleNamespace(synced=True)  # type: ignore[assignment]
    queued: list[Any] = []
    applier.queue.add = lambda key, context=None: queued.append(key)  # type: ignore[method-assign]
    owner = ("modelservings", "ns", "ms")
    writes: list[Written] = []
    applier._writing[owner] = writes  # its reconcile is writing
    applier._on_change(Change(_pod_event("ms-0", "7")))  # the echo of its create, before the answer
    applier._on_change(Change(_pod_event("ms-1", "9")))  # a pod it did not write
    assert queued == []  # nothing is known yet
    writes.append(Written("pods", "ns", "ms-0", resource_version=7))  # the create's answer
    applier._writing.pop(owner)
    applier._written[owner] = writes
    applier._decide_heard(owner)
    assert queued == [owner]  # once, for the news; the echo is no drift
    assert [event.name for event in applier._pod_events.take(owner)] == ["ms-1"]
    applier._on_change(Change(_pod_event("ms-1", "10")))  # no reconcile writing: queued at once
    assert queued == [owner, owner]
    assert applier._heard == {}
