"""One reconcile: a desired set (or a pod event of a ModelServing) made true in the cluster.

Level-triggered like controller-runtime: every call re-reads the children from the API server,
so handling a message twice, or an old one after a new one, changes nothing (design rule 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.bus import ApplyResult, ChildResult, DesiredSet, ObjectEvent, Resource
from kubernetes_asyncio.client.exceptions import ApiException

from ferry_applier.children import apply_children
from ferry_applier.errors import PermanentApplyError, api_message, api_reason, is_permanent
from ferry_applier.generations import GenerationGuard
from ferry_applier.kinds import UnknownKindError
from ferry_applier.kube import KubeClient
from ferry_applier.workload.engine import WorkloadEngine
from ferry_applier.workload.plan import DeleteGroup, DeleteInstance
from ferry_applier.workload.recovery import PodAddress, failed_since, grace_remaining, recovery_action
from ferry_applier.workload.spec import RECOVERY_NONE, SERVING_GROUP_RECREATE, WorkloadSpec
from ferry_applier.workload.state import GROUP_INCARNATION, INSTANCE_INCARNATION, pod_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What a handler decided: a result to publish (or none), or a delay to come back after."""

    result: ApplyResult | None = None
    retry_after: float | None = None
    stale: bool = False


class Reconciler:
    def __init__(self, kube: KubeClient, guard: GenerationGuard, engine: WorkloadEngine) -> None:
        self.kube = kube
        self.guard = guard
        self.engine = engine

    async def reconcile(self, desired: DesiredSet) -> Outcome:
        """Apply one desired set. Transient errors propagate (the caller retries with back-off)."""
        owner = desired.owner
        if desired.deleted:
            await self.guard.forget(owner)  # children go with the owner through ownerReferences (GC)
            return Outcome(ApplyResult(owner=owner, ok=True, reason="OwnerDeleted"))
        if await self.guard.is_stale(owner):
            log.info(
                "dropping desired set of %s/%s generation %s: a newer one was applied",
                owner.namespace,
                owner.name,
                owner.generation,
            )
            return Outcome(stale=True)
        if desired.errors:
            await self.guard.record(owner)
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
            outcome = await apply_children(self.kube, desired)
            children += outcome.results
            if outcome.failures:
                await self.guard.record(owner)
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
        except (ApiException, PermanentApplyError, UnknownKindError) as exc:
            if not is_permanent(exc):
                raise
            await self.guard.record(owner)
            if isinstance(exc, ApiException):
                reason, message = api_reason(exc), api_message(exc)
            else:
                reason, message = getattr(exc, "reason", "ApplyFailed"), str(exc)
            return Outcome(
                ApplyResult(
                    owner=owner, ok=False, permanent=True, reason=reason, message=message, children=children
                )
            )
        await self.guard.record(owner)
        return Outcome(ApplyResult(owner=owner, ok=True, reason="Applied", children=children))

    async def child_event(
        self, event: ObjectEvent, desired: DesiredSet, *, now: datetime | None = None
    ) -> Outcome:
        """A pod or PodGroup of ``desired``'s ModelServing changed: recover, then reconcile.

        A PodGroup event only reconciles (so a deleted PodGroup comes back). A failed pod gets
        ``restartGracePeriodSeconds`` to recover (the message comes back after the remaining time);
        then it is deleted (uid precondition) and the recovery policy applies.
        """
        now = now or datetime.now(UTC)
        workload = desired.workload
        if workload is None or desired.deleted or desired.errors:
            return Outcome()
        owner = desired.owner
        if event.resource != Resource.PODS:
            return await self.reconcile(desired)
        address = PodAddress.of(event.object)
        if address is None:
            return Outcome()
        spec = self.engine.read_spec(workload)
        current = await self.kube.get("Pod", event.namespace, event.name)
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
                    return Outcome(retry_after=remaining)
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
        return await self.reconcile(desired)


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


def serving_of(event: ObjectEvent) -> tuple[str, str] | None:
    """(namespace, ModelServing name) a pod event belongs to, from its labels and controller reference."""
    meta = event.object.get("metadata") or {}
    name = (meta.get("labels") or {}).get(L.MS_NAME)
    if not name:
        return None
    refs = meta.get("ownerReferences") or []
    if refs and not any(ref.get("kind") == "ModelServing" for ref in refs):
        return None
    return event.namespace, name


def owner_uid_of(event: ObjectEvent) -> str:
    for ref in (event.object.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ModelServing":
            return str(ref.get("uid") or "")
    return ""
