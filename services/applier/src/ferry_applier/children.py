"""Plain children: server-side apply every child that differs from the view (all at once), then prune.

The current children come from the bus-fed view (no LIST). A child whose stored form already holds
every desired field is left alone (no request); one that is missing or differs — deleted or edited
by hand — is applied again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ferry_schemas.autoscaling import autoscaled_in
from ferry_schemas.bus import ChildResult, DesiredSet, OwnerKey
from ferry_schemas.runtime.kubeconn import ApiError
from ferry_schemas.runtime.view import ObjectView

from ferry_applier.errors import PermanentApplyError, api_message, is_permanent
from ferry_applier.kinds import KindInfo, kind_info, kind_of
from ferry_applier.kube import KubeClient, Obj
from ferry_applier.replicas import apply_serving, autoscaler_fields, serving_body, without_replicas
from ferry_applier.workload.engine import is_subset

WORKLOAD_KINDS = frozenset({"Pod", "Service", "PodGroup", "ControllerRevision"})
"""Kinds a ModelServing workload manages itself (by ordinal), never pruned by the generic pass."""


def _key(obj: Obj) -> tuple[str, str]:
    return str(obj.get("kind") or ""), str((obj.get("metadata") or {}).get("name") or "")


def prepare_child(owner: OwnerKey, child: dict[str, Any]) -> Obj:
    """The child as it is applied: in the owner's namespace, with the owner's controller reference."""
    kind_of(child)  # an unknown kind or wrong apiVersion is a permanent error for the whole set
    body = {k: v for k, v in child.items() if k != "status"}
    meta = dict(body.get("metadata") or {})
    if not meta.get("name"):
        raise PermanentApplyError(f"a desired {body.get('kind')} has no metadata.name", reason="Invalid")
    meta["namespace"] = owner.namespace
    refs = list(meta.get("ownerReferences") or [])
    if not any(ref.get("uid") == owner.uid for ref in refs):
        refs.append(owner.owner_reference())
    meta["ownerReferences"] = refs
    body["metadata"] = meta
    return body


def prune_candidates(
    existing: Iterable[Obj], desired: set[tuple[str, str]], owner_selector: dict[str, str]
) -> list[Obj]:
    """Objects that carry every owner-selector label but are not desired any more."""
    doomed = []
    for obj in existing:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if (
            owner_selector
            and all(labels.get(k) == v for k, v in owner_selector.items())
            and _key(obj) not in desired
        ):
            doomed.append(obj)
    return doomed


@dataclass
class ChildrenOutcome:
    results: list[ChildResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def managed_kinds(desired: DesiredSet) -> list[KindInfo]:
    """Kinds the generic pass lists and prunes: ``managed_kinds`` (minus workload kinds if any)."""
    kinds: dict[str, KindInfo] = {}
    for name in desired.managed_kinds:
        info = kind_info(name)
        if desired.workload is not None and info.kind in WORKLOAD_KINDS:
            continue
        kinds[info.kind] = info
    return list(kinds.values())


async def apply_children(kube: KubeClient, view: ObjectView, desired: DesiredSet) -> ChildrenOutcome:
    """SSA each child that differs (recording created/applied/unchanged), then prune.

    Transient errors propagate.

    A child the API server refuses permanently (400/422...) is recorded as failed and the others are
    still applied; nothing is pruned then, so a half-valid set never removes what works.
    """
    owner = desired.owner
    outcome = ChildrenOutcome()
    bodies = [prepare_child(owner, child) for child in desired.children]
    kinds = managed_kinds(desired)
    listed_kinds = {info.kind: info for info in kinds}
    for body in bodies:
        info = kind_of(body)
        listed_kinds.setdefault(info.kind, info)
    before: dict[tuple[str, str], Obj] = {}
    if desired.owner_selector:
        for info in listed_kinds.values():
            for obj in view.list(info.plural, owner.namespace, desired.owner_selector):
                before[_key(obj)] = obj
    autoscaled = autoscaled_in(desired.children)

    async def apply_one(body: Obj) -> ChildResult:
        kind, name = _key(body)
        previous = before.get((kind, name)) or view.get(kind_of(body).plural, owner.namespace, name)
        compared = body
        if kind == "ModelServing" and name in autoscaled:  # the autoscaler's replicas are not drift
            compared = without_replicas(body, roles=autoscaler_fields(previous)[1])
        elif kind == "ModelServing":  # nor those another manager set since the owner's last change
            compared = serving_body(body, previous, kube.field_manager)
        if previous is not None and is_subset(compared, previous):
            return ChildResult(api_version=body["apiVersion"], kind=kind, name=name, action="unchanged")
        try:
            if kind == "ModelServing":  # always applied: its replicas' owners are read off managedFields
                stored = await apply_serving(kube, body, previous, name in autoscaled)
            elif previous is None:
                stored = await kube.create_or_apply(body)
            else:
                stored = await kube.apply(body)
        except ApiError as exc:
            if not is_permanent(exc):
                raise
            message = f"{kind} {name}: {api_message(exc)}"
            outcome.failures.append(message)
            return ChildResult(
                api_version=body["apiVersion"], kind=kind, name=name, action="failed", message=message
            )
        if previous is None:
            action = "created"
        elif (previous.get("metadata") or {}).get("resourceVersion") == (stored.get("metadata") or {}).get(
            "resourceVersion"
        ):
            action = "unchanged"
        else:
            action = "applied"
        return ChildResult(api_version=body["apiVersion"], kind=kind, name=name, action=action)

    # the children do not depend on each other: one round trip for all of them, not one each
    applied = await asyncio.gather(*(apply_one(body) for body in bodies), return_exceptions=True)
    for result in applied:
        if isinstance(result, BaseException):
            raise result  # transient: the whole set is retried (applies are idempotent)
        outcome.results.append(result)
    if outcome.failures:
        return outcome
    wanted = {_key(body) for body in bodies}
    existing = [obj for obj in before.values() if obj.get("kind") in {info.kind for info in kinds}]
    for obj in prune_candidates(existing, wanted, desired.owner_selector):
        kind, name = _key(obj)
        uid = (obj.get("metadata") or {}).get("uid")
        if await kube.delete(kind, owner.namespace, name, uid=uid):
            outcome.results.append(
                ChildResult(api_version=str(obj.get("apiVersion")), kind=kind, name=name, action="pruned")
            )
    return outcome
