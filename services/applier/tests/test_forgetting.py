"""What the applier keeps per owner is dropped once the owner has no desired set any more."""

from dataclasses import replace
from typing import Any

from ferry_applier.kube import Written
from ferry_applier.service import RECORD_LEASE, Applier
from ferry_applier.settings import ApplierSettings


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
