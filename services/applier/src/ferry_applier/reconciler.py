"""One reconcile: an owner's latest desired set made true in the cluster, after its pod events.

Level-triggered like controller-runtime: every call reads the children from the bus-fed view, so
handling a trigger twice, or an old one after a new one, changes nothing (design rule 1). Pod events
are kept per owner until its next reconcile, which first applies the recovery policy to them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.bus import ApplyResult, ChildResult, DesiredSet, ObjectEvent, Resource
from ferry_schemas.runtime.kubeconn import ApiError
from ferry_schemas.runtime.view import ObjectView

from ferry_applier.children import apply_children
from ferry_applier.errors import PermanentApplyError, api_message, api_reason, is_permanent
from ferry_applier.generations import HeldRecord, Verdict
from ferry_applier.kinds import UnknownKindError, kind_info
from ferry_applier.kube import KubeClient
from ferry_applier.workload.engine import WorkloadEngine
from ferry_applier.workload.plan import DeleteGroup, DeleteInstance
from ferry_applier.workload.recovery import PodAddress, failed_since, grace_remaining, recovery_action
from ferry_applier.workload.spec import RECOVERY_NONE, SERVING_GROUP_RECREATE, WorkloadSpec
from ferry_applier.workload.state import GROUP_INCARNATION, INSTANCE_INCARNATION, pod_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What a reconcile decided: a result to publish (or none), and pod events to look at again
    after ``retry_after`` seconds (failed pods still within their restart grace period);
    ``sequence``: the ``FERRY_DESIRED`` position of the desired set it applied."""

    result: ApplyResult | None = None
    retry_after: float | None = None
    stale: bool = False
    waiting: list[ObjectEvent] = field(default_factory=list)
    sequence: int = 0


LastDesired = Callable[[], Awaitable[tuple[DesiredSet, int] | None]]
"""Reads the owner's desired set from its subject's last message, with its stream sequence."""


class Reconciler:
    def __init__(self, kube: KubeClient, view: ObjectView, engine: WorkloadEngine) -> None:
        self.kube = kube
        self.view = view
        self.engine = engine
        self._deleted_pods: dict[str, None] = {}
        """uids of pods the applier deleted itself (scale, rolling update, recovery): their
        tombstones are no loss to recover from."""

    def deleted_on_purpose(self, uids: Iterable[str]) -> None:
        for uid in uids:
            self._deleted_pods[uid] = None
        while len(self._deleted_pods) > 100_000:
            del self._deleted_pods[next(iter(self._deleted_pods))]

    async def reconcile(
        self,
        desired: DesiredSet,
        sequence: int,
        record: HeldRecord,
        pod_events: Iterable[ObjectEvent] = (),
        *,
        last: LastDesired | None = None,
    ) -> Outcome:
        """Advance the owner's record (taking its lease), recover from the pod events, then apply the
        desired set.

        ``last`` is given when ``desired`` was delivered rather than read as its subject's last
        message: it is called when the record says a later set was applied (``generations.py``).
        """
        verdict = await record.advance(desired.owner, sequence, latest=last is None, deleted=desired.deleted)
        if verdict is Verdict.BEHIND:
            assert last is not None
            found = await last()
            if found is None:
                return Outcome()
            desired, sequence = found
            verdict = await record.advance(desired.owner, sequence, latest=True, deleted=desired.deleted)
        stale = verdict is Verdict.STALE
        waiting: list[ObjectEvent] = []
        retry_after: float | None = None
        if desired.workload is not None and not desired.deleted and not desired.errors:
            for event in pod_events:
                wait = await self.recover(event, desired)
                if wait is not None:
                    waiting.append(event)
                    retry_after = wait if retry_after is None else min(retry_after, wait)
        if stale:
            owner = desired.owner
            log.info(
                "dropping desired set of %s/%s generation %s: a newer one was applied",
                owner.namespace,
                owner.name,
                owner.generation,
            )
            return Outcome(None, retry_after, True, waiting, sequence)
        outcome = await self.apply(desired)
        return Outcome(outcome.result, retry_after, False, waiting, sequence)

    async def apply(self, desired: DesiredSet) -> Outcome:
        """Apply one desired set the generation guard let through (:meth:`reconcile`). Transient
        errors propagate (the caller retries with back-off)."""
        owner = desired.owner
        if desired.deleted:  # children go with the owner through ownerReferences (GC)
            return Outcome(ApplyResult(owner=owner, ok=True, reason="OwnerDeleted"))
        if desired.errors:
            return Outcome(
                ApplyResult(
                    owner=owner,
                    ok=False,
                    permanent=True,
                    reason=desired.errors[0].reason or "ConversionFailed",
                    message="; ".join(str(error) for error in desired.errors),
                )
            )
        children: list[ChildResult] = []
        try:
            outcome = await apply_children(self.kube, self.view, desired)
            children += outcome.results
            if outcome.failures:
                return Outcome(
                    ApplyResult(
                        owner=owner,
                        ok=False,
                        permanent=True,
                        reason="ApplyFailed",
                        message="; ".join(outcome.failures),
                        children=children,
                    )
                )
            if desired.workload is not None:
                children += await self.engine.reconcile(owner, desired.workload)
        except (ApiError, PermanentApplyError, UnknownKindError) as exc:
            if not is_permanent(exc):
                raise
            if isinstance(exc, ApiError):
                reason, message = api_reason(exc), api_message(exc)
            else:
                reason, message = getattr(exc, "reason", "ApplyFailed"), str(exc)
            return Outcome(
                ApplyResult(
                    owner=owner, ok=False, permanent=True, reason=reason, message=message, children=children
                )
            )
        return Outcome(ApplyResult(owner=owner, ok=True, reason="Applied", children=children))

    async def recover(
        self, event: ObjectEvent, desired: DesiredSet, *, now: datetime | None = None
    ) -> float | None:
        """Apply the recovery policy to one pod event of ``desired``'s ModelServing.

        A failed pod gets ``restartGracePeriodSeconds`` to recover (the seconds left are returned and
        the event is looked at again then); then it is deleted (uid precondition) and the recovery
        policy applies, as it does to a pod that was deleted.
        """
        now = now or datetime.now(UTC)
        workload = desired.workload
        if (
            workload is None
            or event.resource != Resource.PODS
            or owner_uid_of(event) not in ("", desired.owner.uid)  # an earlier owner's pod
            or (event.deleted and event.uid in self._deleted_pods)  # deleted by the applier itself
        ):
            return None
        owner = desired.owner
        address = PodAddress.of(event.object)
        if address is None:
            return None
        spec = self.engine.read_spec(workload)
        current = self.view.get(Resource.PODS, event.namespace, event.name)
        current_uid = ((current or {}).get("metadata") or {}).get("uid")
        lost = False
        if event.deleted:
            lost = current is None or (
                current_uid != event.uid and replaced_alone(event.object, current, spec.recovery_policy)
            )
        elif current is not None and current_uid == event.uid:
            state = pod_state(current)
            if state.failed and not state.terminating:
                since = failed_since(current, event.observed_at)
                remaining = grace_remaining(since, spec.restart_grace_period_seconds, now)
                if remaining > 0:
                    return remaining
                lost = await self.kube.delete("Pod", event.namespace, event.name, uid=event.uid)
        if lost and still_desired(spec, address, event.name):
            action = recovery_action(spec.recovery_policy, address)
            if isinstance(action, DeleteGroup):
                await self.engine.delete_group(owner, action.ordinal)
            elif isinstance(action, DeleteInstance):
                await self.engine.delete_instance(owner, action.group, action.role, action.role_ordinal)
            log.info(
                "pod %s/%s lost; recovery %s: %s", event.namespace, event.name, spec.recovery_policy, action
            )
        return None


def still_desired(spec: WorkloadSpec, address: PodAddress, pod_name: str) -> bool:
    """A pod that scale-down removed on purpose is not lost: its group, role and index are still wanted."""
    role = spec.role(address.role)
    _, index = L.parse_ordinal(pod_name)
    return (
        role is not None
        and address.group < spec.replicas
        and address.role_ordinal < role.replicas
        and 0 <= index < role.pods_per_instance
    )


def replaced_alone(lost: dict[str, Any], replacement: dict[str, Any], policy: str) -> bool:
    """True when ``replacement`` came back on its own (same group/instance incarnation as the lost pod).

    Then the recovery policy has not rebuilt the unit yet (a reconcile recreated the missing pod
    before the tombstone arrived) and must still apply; a rebuilt unit has a new incarnation.
    """
    key = {SERVING_GROUP_RECREATE: GROUP_INCARNATION, RECOVERY_NONE: ""}.get(policy, INSTANCE_INCARNATION)
    if not key:
        return False
    before = ((lost.get("metadata") or {}).get("annotations") or {}).get(key)
    after = ((replacement.get("metadata") or {}).get("annotations") or {}).get(key)
    return bool(before) and before == after


OwnerRef = tuple[str, str, str]
"""(resource, namespace, name) of an owner: the work queue's key."""


def owner_resource(kind: str) -> str:
    """The plural resource of an owner kind (Ferry's table, else Kubernetes' regular plural)."""
    try:
        return kind_info(kind).plural
    except UnknownKindError:
        return f"{kind.lower()}s"


def owner_uid_of(event: ObjectEvent) -> str:
    for ref in (event.object.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ModelServing":
            return str(ref.get("uid") or "")
    return ""
