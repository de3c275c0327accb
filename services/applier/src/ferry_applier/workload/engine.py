"""Executes the workload plan against the API server (spec/serving.md §2-§6).

Every reconcile reads the ModelServing's pods, Services, PodGroups and template snapshots from
the bus-fed view (no LIST), plans with :func:`~ferry_applier.workload.plan.plan_workload` and
carries the actions out with server-side apply (creation) and deletes (uid preconditions; label
selectors for a group's or role instance's pods).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.bus import ChildResult, OwnerKey, Resource, ServingWorkload
from ferry_schemas.runtime.kubeconn import ApiError
from ferry_schemas.runtime.view import ObjectView

from ferry_applier.errors import PermanentApplyError, TransientError
from ferry_applier.kube import KubeClient, Obj
from ferry_applier.workload.plan import (
    Action,
    CreateGroup,
    CreatePods,
    DeleteGroup,
    DeleteInstance,
    MarkUpdated,
    Revision,
    plan_workload,
)
from ferry_applier.workload.spec import WorkloadSpec
from ferry_applier.workload.state import GROUP_INCARNATION, INSTANCE_INCARNATION, GroupState, observe

log = logging.getLogger(__name__)

Renderer = Callable[[ServingWorkload, OwnerKey, int], list[Obj]]
"""Renders every object of one ServingGroup ordinal (pods, headless Services, PodGroup)."""

SpecReader = Callable[[ServingWorkload], WorkloadSpec]
Snapshots = dict[str, tuple[Obj, ServingWorkload | None]]
"""Template snapshots (ControllerRevisions) by revision, with the workload each holds."""
Made = dict[tuple[str, str], Obj]
"""(kind, name) → the body of each group object (PodGroup, Service) one reconcile created."""

SNAPSHOT_FIELD_MANAGER = "ferry"
_APPLIED_METADATA = ("name", "labels", "annotations", "ownerReferences")
REVISION_FIELD_MANAGER = "ferry-revision"
PARSED_SNAPSHOTS = 256
"""Workloads of the snapshots reconciled last, kept parsed (the view keeps every snapshot packed; a
parsed workload holds the whole template, so keeping every one would cost what packing saves)."""
POD_LABELS_FIELD_MANAGER = "ferry-pod-labels"
"""Owns the labels a pod edited by hand gets back (always the whole rendered set, so no label it
applied before is ever dropped by a later apply)."""


def owned_by(obj: Obj, uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def name_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def uid_of(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("uid") or None


def labels_of(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def images(pod: Obj) -> dict[str, str]:
    """Container name → image, init containers included."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return {str(c.get("name")): str(c.get("image")) for c in containers}


def is_subset(desired: Any, actual: Any) -> bool:
    """True when every field of ``desired`` is present with the same value in ``actual``."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(is_subset(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
        )
    return bool(desired == actual) or (desired is not None and str(desired) == str(actual))


def role_hashes(objects: Iterable[Obj]) -> dict[str, str]:
    """Role name → role-template hash, read from the rendered entry pods."""
    hashes: dict[str, str] = {}
    for obj in objects:
        if obj.get("kind") != "Pod":
            continue
        labels = labels_of(obj)
        role = labels.get(L.MS_ROLE)
        if role:
            hashes.setdefault(role, labels.get(L.MS_ROLE_TEMPLATE_HASH) or labels.get(L.MS_REVISION, ""))
    return hashes


def snapshot_name(serving: str, revision: str) -> str:
    return f"{serving}-{revision}"


class WorkloadEngine:
    """One ModelServing's ServingGroups made to match its workload."""

    def __init__(self, kube: KubeClient, view: ObjectView, render: Renderer, read_spec: SpecReader) -> None:
        self.kube = kube
        self.view = view
        self.render = render
        self.read_spec = read_spec
        self._parsed: OrderedDict[tuple[str, str], ServingWorkload | None] = OrderedDict()
        """Snapshot (uid, resourceVersion) → its workload: a snapshot is never rewritten, so each is
        validated once, not on every reconcile of its owner."""

    # ------------------------------------------------------------------ revisions

    def revision(self, workload: ServingWorkload, owner: OwnerKey) -> Revision:
        spec = self.read_spec(workload)
        return Revision(workload.revision, spec, role_hashes(self.render(workload, owner, 0)))

    async def _snapshots(self, owner: OwnerKey) -> Snapshots:
        found: Snapshots = {}
        for obj in self.view.list(Resource.CONTROLLER_REVISIONS, owner.namespace, {L.MS_NAME: owner.name}):
            if not owned_by(obj, owner.uid):
                continue
            found[labels_of(obj).get(L.MS_REVISION, "")] = (obj, self._workload_of(obj))
        return found

    def _workload_of(self, snapshot: Obj) -> ServingWorkload | None:
        meta = snapshot.get("metadata") or {}
        key = (str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""))
        if key in self._parsed:
            self._parsed.move_to_end(key)
            return self._parsed[key]
        try:
            workload = ServingWorkload.model_validate((snapshot.get("data") or {}).get("workload"))
        except Exception:
            workload = None
        while len(self._parsed) >= PARSED_SNAPSHOTS:
            self._parsed.popitem(last=False)  # the least recently read first
        self._parsed[key] = workload
        return workload

    async def _ensure_snapshot(self, owner: OwnerKey, workload: ServingWorkload, existing: Snapshots) -> None:
        """Keep the template of every revision in a ControllerRevision (created once, never rewritten).

        Its ``revision`` number counts up, so the oldest kept snapshot is known (:func:`_oldest_snapshot`).
        It is POSTed (its ``data`` is immutable; no YAML parse and no merge: 1.5 ms of the API server's
        CPU, not 2.4). A recreated ModelServing waits (a transient error, retried) until the garbage
        collector has deleted the earlier incarnation's snapshot of the same name; a snapshot of that
        name that no ModelServing of the name owns is a permanent error, until somebody deletes it.
        """
        if workload.revision in existing:
            return
        number = 1 + max((int(obj.get("revision") or 0) for obj, _ in existing.values()), default=0)
        name = snapshot_name(owner.name, workload.revision)
        created = await self.kube.create(
            {
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": {
                    "name": name,
                    "namespace": owner.namespace,
                    "labels": {L.MS_NAME: owner.name, L.MS_REVISION: workload.revision},
                    "ownerReferences": [owner.owner_reference()],
                },
                "revision": number,
                "data": {"workload": workload.model_dump(mode="json", by_alias=True, exclude_none=True)},
            },
            field_manager=SNAPSHOT_FIELD_MANAGER,
        )
        if created is not None:
            return
        # the name is taken: ours (written before the view heard of it), an earlier incarnation's
        # (the garbage collector deletes it), or somebody else's
        stored = await self.kube.get("ControllerRevision", owner.namespace, name)
        if stored is None:
            raise TransientError(f"ControllerRevision {name} was deleted while it was being created")
        if owned_by(stored, owner.uid):
            return
        earlier = [
            ref
            for ref in (stored.get("metadata") or {}).get("ownerReferences") or ()
            if ref.get("kind") == owner.kind and ref.get("name") == owner.name
        ]
        if earlier:
            raise TransientError(
                f"ControllerRevision {name} belongs to an earlier ModelServing {owner.name}; "
                "waiting for the garbage collector to delete it"
            )
        raise PermanentApplyError(
            f"ControllerRevision {name} exists and is not ModelServing {owner.name}'s; "
            "delete it so the revision's template can be stored",
            reason="SnapshotConflict",
        )

    # ------------------------------------------------------------------ reconcile

    async def reconcile(
        self, owner: OwnerKey, workload: ServingWorkload, current_revision: str = ""
    ) -> list[ChildResult]:
        """Observe, plan, act; returns what was created and deleted.

        The revision's snapshot is written alongside the group's PodGroup and Services (nothing this
        reconcile reads needs it: the plan knows the new revision from ``workload``) and awaited
        before any pod is created, so a ModelServing's first reconcile is two round trips before
        its pods, not three, and no pod is ever created while its revision's snapshot failed to be
        written (a recreated ModelServing's snapshot is refused while the old incarnation's one of
        the same name waits for the garbage collector: its pods must wait too).
        """
        snapshots = await self._snapshots(owner)
        snapshot = asyncio.ensure_future(self._ensure_snapshot(owner, workload, snapshots))
        try:
            results = await self._act(owner, workload, current_revision, snapshots, snapshot)
            await snapshot
        finally:
            if not snapshot.done():
                snapshot.cancel()
            await asyncio.gather(snapshot, return_exceptions=True)
        return results

    async def _act(
        self,
        owner: OwnerKey,
        workload: ServingWorkload,
        current_revision: str,
        snapshots: Snapshots,
        snapshot: Awaitable[None],
    ) -> list[ChildResult]:
        ns = owner.namespace
        results: list[ChildResult] = []
        new = self.revision(workload, owner)
        workloads: dict[str, ServingWorkload] = {workload.revision: workload}
        revisions: dict[str, Revision] = {}
        for name, (_, old) in snapshots.items():
            if old is not None and name != workload.revision:
                workloads[name] = old
                revisions[name] = self.revision(old, owner)

        all_pods = self.view.list(Resource.PODS, ns, {L.MS_NAME: owner.name})
        pods = [pod for pod in all_pods if owned_by(pod, owner.uid)]
        # a pod whose labels were edited by hand is still this owner's (ownerReference): its name is taken
        owned_pods = self.view.owned(owner.uid, Resource.PODS)
        taken_names = {name_of(pod) for pod in all_pods} | {name_of(pod) for pod in owned_pods}
        observed = observe(pods)
        if not current_revision or current_revision not in workloads:
            current_revision = _oldest_common_revision(observed, new.name, workloads)
            if current_revision == new.name and new.spec.has_partition:
                # every pod of the old revision is gone (a protected instance was lost): the
                # partition still protects it, so rebuild it from the oldest kept snapshot
                current_revision = _oldest_snapshot(snapshots, new.name) or new.name
        plan = plan_workload(new, observed, revisions=revisions, current_revision=current_revision)

        made: Made = {}
        for action in plan.actions:
            log.info("%s/%s: %s", owner.namespace, owner.name, action)
            results += await self._execute(
                owner, action, workloads, new.name, plan.groups, taken_names, snapshot, made
            )

        rendered = self._renderings(owner, workloads, new.name)
        results += await self._sync_group_objects(owner, plan.groups, new, rendered, made)
        results += await self._repair_pods(owner, owned_pods, plan.groups, workloads, new.name, rendered)
        await self._prune_snapshots(owner, snapshots, plan.groups, {new.name, current_revision})
        return results

    def _renderings(
        self, owner: OwnerKey, workloads: dict[str, ServingWorkload], new: str
    ) -> Callable[[str, int], list[Obj]]:
        """``rendered(revision, ordinal)``: one group's objects at a revision, rendered once per reconcile."""
        memo: dict[tuple[str, int], list[Obj]] = {}

        def rendered(revision: str, ordinal: int) -> list[Obj]:
            key = (revision if revision in workloads else new, ordinal)
            if key not in memo:
                memo[key] = self.render(workloads[key[0]], owner, ordinal)
            return memo[key]

        return rendered

    async def _repair_pods(
        self,
        owner: OwnerKey,
        owned_pods: list[Obj],
        groups: list[GroupState],
        workloads: dict[str, ServingWorkload],
        new: str,
        rendered: Callable[[str, int], list[Obj]],
    ) -> list[ChildResult]:
        """Pods edited by hand go back to their revision's rendering: labels are applied again (the
        router and ModelServers select by them); a changed image replaces the pod (deleted with a
        uid precondition; the next reconcile creates it from its revision, as for a lost pod)."""
        expected: dict[str, tuple[str, Obj]] = {}
        for group in groups:
            if group.deleting:
                continue
            revision = group.revision_against(new)
            for obj in rendered(revision, group.ordinal):
                if obj.get("kind") == "Pod":
                    expected[name_of(obj)] = (revision, obj)
        results: list[ChildResult] = []
        for pod in owned_pods:
            meta = pod.get("metadata") or {}
            found = expected.get(name_of(pod))
            if found is None or meta.get("deletionTimestamp"):
                continue  # not desired (scale-down removes it) or already going
            revision, want = found
            own_revision = labels_of(pod).get(L.MS_REVISION, "")
            if own_revision in workloads and own_revision != revision:  # a pod marked or kept at its own
                _, ordinal = L.parse_ordinal(labels_of(want).get(L.MS_GROUP_NAME, ""))
                want = next((o for o in rendered(own_revision, ordinal) if name_of(o) == name_of(pod)), want)
                revision = own_revision
            if revision not in workloads:
                continue  # no template of that revision to compare with: the rolling update replaces it
            if images(want) != images(pod):
                if await self.kube.delete("Pod", owner.namespace, name_of(pod), uid=uid_of(pod)):
                    results.append(
                        ChildResult(
                            api_version="v1", kind="Pod", name=name_of(pod), action="deleted",
                            message="image edited by hand: replaced from its revision",
                        )
                    )  # fmt: skip
                continue
            labels = {**labels_of(want), L.MS_REVISION: revision}
            if all(labels_of(pod).get(k) == v for k, v in labels.items()):
                continue
            metadata = {"name": name_of(pod), "namespace": owner.namespace, "labels": labels}
            await self.kube.apply(
                {"apiVersion": "v1", "kind": "Pod", "metadata": metadata},
                field_manager=POD_LABELS_FIELD_MANAGER,
            )
            results.append(
                ChildResult(
                    api_version="v1", kind="Pod", name=name_of(pod), action="applied", message="labels"
                )
            )
        return results

    async def _execute(
        self,
        owner: OwnerKey,
        action: Action,
        workloads: dict[str, ServingWorkload],
        new: str,
        groups: list[GroupState],
        taken: set[str],
        before_pods: Awaitable[None],
        made: Made,
    ) -> list[ChildResult]:
        """Carry out one action; ``before_pods`` is awaited before any pod is created; the group's
        PodGroup and Services it creates are kept in ``made``."""
        ns = owner.namespace
        ordinal = action.ordinal if isinstance(action, CreateGroup | DeleteGroup) else action.group
        group_name = L.group_name(owner.name, ordinal)
        if isinstance(action, CreateGroup):
            objects = self.render(workloads.get(action.revision, workloads[new]), owner, action.ordinal)
            # the PodGroup and Services first, so gang scheduling sees the group before its pods
            ordered = sorted(objects, key=lambda obj: obj.get("kind") == "Pod")
            group_id, instance_ids = new_incarnation(), dict[str, str]()
            for obj in ordered:
                if obj.get("kind") == "Pod":
                    rid = labels_of(obj).get(L.MS_ROLE_ID, "")
                    stamp(obj, group_id, instance_ids.setdefault(rid, new_incarnation()))
            wanted = [obj for obj in ordered if _wanted(obj, taken)]
            first = [obj for obj in wanted if obj.get("kind") != "Pod"]
            created = await self._create_all(owner, first, taken)
            made.update(((str(obj.get("kind")), name_of(obj)), obj) for obj in first)
            await before_pods
            created += await self._create_all(
                owner, [obj for obj in wanted if obj.get("kind") == "Pod"], taken
            )
            return created
        if isinstance(action, CreatePods):
            workload = workloads.get(action.revision, workloads[new])
            rid = L.role_id(action.role, action.role_ordinal)
            names = {L.pod_name(group_name, rid, index) for index in action.indices}
            objects = [
                obj
                for obj in self.render(workload, owner, action.group)
                if obj.get("kind") == "Pod" and name_of(obj) in names
            ]
            group_id, instance_id = incarnations_for(groups, action)
            for obj in objects:
                stamp(obj, group_id, instance_id)
            await before_pods
            return await self._create_all(owner, [obj for obj in objects if name_of(obj) not in taken], taken)
        if isinstance(action, DeleteGroup):
            await self.delete_group(owner, action.ordinal)
            return [
                ChildResult(
                    api_version="v1", kind="Pod", name=group_name, action="deleted", message=action.reason
                )
            ]
        if isinstance(action, DeleteInstance):
            await self.delete_instance(owner, action.group, action.role, action.role_ordinal)
            return [
                ChildResult(
                    api_version="v1",
                    kind="Pod",
                    name=f"{group_name}-{L.role_id(action.role, action.role_ordinal)}",
                    action="deleted",
                    message=action.reason,
                )
            ]
        assert isinstance(action, MarkUpdated)
        group = next((g for g in groups if g.ordinal == action.group), None)
        changed: list[ChildResult] = []
        for pod in group.pods if group else []:
            if pod.terminating or pod.revision == action.revision:
                continue
            await self.kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod.name,
                        "namespace": ns,
                        "labels": {L.MS_REVISION: action.revision},
                    },
                },
                field_manager=REVISION_FIELD_MANAGER,
            )
            changed.append(
                ChildResult(api_version="v1", kind="Pod", name=pod.name, action="applied", message="revision")
            )
        return changed

    async def _create_all(self, owner: OwnerKey, objects: list[Obj], taken: set[str]) -> list[ChildResult]:
        """Create ``objects`` concurrently (one round trip, not one per object); the first error
        is raised once every request has finished."""
        created = await asyncio.gather(
            *(self._create(owner, obj, taken) for obj in objects), return_exceptions=True
        )
        for result in created:
            if isinstance(result, BaseException):
                raise result
        return [result for result in created if isinstance(result, ChildResult)]

    async def _create(self, owner: OwnerKey, obj: Obj, taken: set[str]) -> ChildResult | None:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = owner.namespace
        if not meta.get("ownerReferences"):
            meta["ownerReferences"] = [owner.owner_reference()]
        if obj.get("kind") == "Pod":
            taken.add(name_of(obj))
            if await self.kube.create(obj) is None:
                return None  # it exists already (a concurrent reconcile made it): nothing to do
        elif not await self._apply(obj, new=True):
            return None
        return ChildResult(
            api_version=str(obj["apiVersion"]), kind=str(obj["kind"]), name=name_of(obj), action="created"
        )

    async def _apply(self, obj: Obj, *, new: bool) -> bool:
        """SSA one object (POST a ``new`` one); False when it is a PodGroup and the cluster has no
        PodGroup CRD.

        Like Kthena, gang scheduling is simply off without the CRD (Ferry ships it in deploy/crds).
        """
        try:
            if new:
                await self.kube.create_or_apply(obj)
            else:
                await self.kube.apply(obj)
        except ApiError as exc:
            namespace = str(obj["metadata"]["namespace"])
            if (
                obj.get("kind") == "PodGroup"
                and exc.status == 404
                and not await self.kube.served("PodGroup", namespace)
            ):
                log.warning("no PodGroup CRD in the cluster: PodGroup %s skipped", name_of(obj))
                return False
            raise
        return True

    async def delete_group(self, owner: OwnerKey, ordinal: int) -> None:
        """§6.5: the PodGroup, every pod and every Service of ServingGroup ``ordinal``."""
        group = L.group_name(owner.name, ordinal)
        selector = {L.MS_NAME: owner.name, L.MS_GROUP_NAME: group}
        for podgroup in self.view.list(Resource.POD_GROUPS, owner.namespace, selector):
            if owned_by(podgroup, owner.uid):
                await self.kube.delete("PodGroup", owner.namespace, name_of(podgroup), uid=uid_of(podgroup))
        await self._delete_pods(owner, selector)
        for service in self.view.list(Resource.SERVICES, owner.namespace, selector):
            if owned_by(service, owner.uid):
                await self.kube.delete("Service", owner.namespace, name_of(service), uid=uid_of(service))

    async def _delete_pods(self, owner: OwnerKey, selector: dict[str, str]) -> None:
        """Delete the owner's pods the view shows under ``selector``, each with a uid precondition.

        Not a DeleteCollection by selector: a replica whose view lags must never delete pods it has
        not seen (another replica may have just created them), and a uid precondition makes a stale
        delete a harmless 409.
        """
        for pod in self.view.list(Resource.PODS, owner.namespace, selector):
            if owned_by(pod, owner.uid) and not (pod.get("metadata") or {}).get("deletionTimestamp"):
                await self.kube.delete("Pod", owner.namespace, name_of(pod), uid=uid_of(pod))

    async def delete_instance(self, owner: OwnerKey, ordinal: int, role: str, role_ordinal: int) -> None:
        """§6.5 DeleteRole: every pod and the Service of one role instance."""
        selector = {
            L.MS_NAME: owner.name,
            L.MS_GROUP_NAME: L.group_name(owner.name, ordinal),
            L.MS_ROLE: role,
            L.MS_ROLE_ID: L.role_id(role, role_ordinal),
        }
        await self._delete_pods(owner, selector)
        for service in self.view.list(Resource.SERVICES, owner.namespace, selector):
            if owned_by(service, owner.uid):
                await self.kube.delete("Service", owner.namespace, name_of(service), uid=uid_of(service))

    async def _sync_group_objects(
        self,
        owner: OwnerKey,
        groups: list[GroupState],
        new: Revision,
        rendered: Callable[[str, int], list[Obj]],
        made: Made,
    ) -> list[ChildResult]:
        """Headless Services and PodGroups of live groups exist and match; the others are deleted.

        What this reconcile created (``made``) exists even where the view has not heard of it yet:
        POSTing it again would cost a 409, an apply and an ownership fold.
        """
        ns = owner.namespace
        selector = {L.MS_NAME: owner.name}
        existing: dict[tuple[str, str], Obj] = {}
        for kind, resource in (("Service", Resource.SERVICES), ("PodGroup", Resource.POD_GROUPS)):
            for obj in self.view.list(resource, ns, selector):
                if owned_by(obj, owner.uid):
                    existing[(kind, name_of(obj))] = obj
        desired: dict[tuple[str, str], Obj] = {}
        for group in groups:
            if group.deleting:
                continue
            for obj in rendered(group.revision_against(new.name), group.ordinal):
                kind = str(obj.get("kind"))
                if kind == "Service" or (
                    kind == "PodGroup" and new.spec.scheduler_name == L.VOLCANO_SCHEDULER
                ):
                    desired[(kind, name_of(obj))] = obj
        results: list[ChildResult] = []
        for key, obj in desired.items():
            current = existing.get(key) or made.get(key)
            body = {k: v for k, v in obj.items() if k != "status"}
            body["metadata"] = {
                k: v
                for k, v in (obj.get("metadata") or {}).items()
                if k in ("name", "labels", "annotations", "ownerReferences")
            }
            body["metadata"]["namespace"] = ns
            if not body["metadata"].get("ownerReferences"):
                body["metadata"]["ownerReferences"] = [owner.owner_reference()]
            if current is not None and is_subset(body, current):
                continue
            if not await self._apply(body, new=current is None):
                continue
            results.append(
                ChildResult(
                    api_version=str(obj["apiVersion"]),
                    kind=key[0],
                    name=key[1],
                    action="created" if current is None else "applied",
                )
            )
        for key, obj in existing.items():
            if key in desired:
                continue
            _, ordinal = L.parse_ordinal(labels_of(obj).get(L.MS_GROUP_NAME, ""))
            if any(g.ordinal == ordinal and g.deleting for g in groups):
                continue  # deleted with its group already
            if await self.kube.delete(key[0], ns, key[1], uid=(obj.get("metadata") or {}).get("uid")):
                results.append(
                    ChildResult(
                        api_version=str(obj.get("apiVersion")), kind=key[0], name=key[1], action="pruned"
                    )
                )
        return results

    async def _prune_snapshots(
        self,
        owner: OwnerKey,
        snapshots: Snapshots,
        groups: list[GroupState],
        keep: set[str],
    ) -> None:
        """Drop template snapshots no pod and no partition needs any more."""
        in_use = set(keep)
        for group in groups:
            in_use.update(pod.revision for pod in group.pods)
            if group.planned:
                in_use.add(group.planned_revision)
        for revision, (obj, _) in snapshots.items():
            if revision not in in_use:
                await self.kube.delete("ControllerRevision", owner.namespace, name_of(obj), uid=uid_of(obj))


def new_incarnation() -> str:
    return uuid.uuid4().hex[:12]


def stamp(pod: Obj, group_id: str, instance_id: str) -> None:
    annotations = pod.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[GROUP_INCARNATION] = group_id
    annotations[INSTANCE_INCARNATION] = instance_id


def incarnations_for(groups: list[GroupState], action: CreatePods) -> tuple[str, str]:
    """Pods added to an existing instance keep its ids; a new instance gets a new instance id."""
    group = next((g for g in groups if g.ordinal == action.group), None)
    if group is None:
        return new_incarnation(), new_incarnation()
    instance = next(
        (i for i in group.instances.get(action.role, []) if i.ordinal == action.role_ordinal and i.live_pods),
        None,
    )
    group_id = group.incarnation or new_incarnation()
    return group_id, (instance.incarnation if instance is not None else "") or new_incarnation()


def _wanted(obj: Obj, taken: set[str]) -> bool:
    return not (obj.get("kind") == "Pod" and name_of(obj) in taken)


def _oldest_common_revision(groups: list[GroupState], new: str, workloads: dict[str, ServingWorkload]) -> str:
    """The revision partition-protected groups keep: the most common old one still in use."""
    counts = Counter(
        g.revision_against(new) for g in groups if not g.deleting and g.revision_against(new) != new
    )
    candidates = [rev for rev, _ in counts.most_common() if rev in workloads]
    return candidates[0] if candidates else new


def _oldest_snapshot(snapshots: Snapshots, new: str) -> str:
    """The oldest template snapshot other than ``new`` (Kthena: the first ControllerRevision that differs)."""
    old = [
        (int(obj.get("revision") or 0), str((obj.get("metadata") or {}).get("creationTimestamp") or ""), rev)
        for rev, (obj, workload) in snapshots.items()
        if rev != new and workload is not None
    ]
    return min(old)[2] if old else ""
