"""What the applier's view keeps of each object: only what a reconcile reads.

At 500 boosters the view held every object whole (pods with their full spec and status,
ModelServings with every managedFields entry), most of the applier's memory. A reconcile reads:

* of any object: ``metadata`` (names, labels, annotations, ownerReferences, uid, resourceVersion,
  deletionTimestamp) and what it applies (``spec``, a ControllerRevision's ``data``), never ``status``;
* of a pod: its containers' names and images (drift), ``status.phase``, ``conditions`` and the
  containers' ``restartCount`` (readiness, failure, recovery grace);
* of a ModelServing's ``managedFields``: who owns ``spec.replicas`` and the roles' ``replicas``
  (:mod:`ferry_applier.replicas`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ferry_schemas.bus import Resource

Obj = dict[str, Any]
CONTAINERS = ("initContainers", "containers")
CONTAINER_STATUSES = ("initContainerStatuses", "containerStatuses")


def without_status(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k != "status"}


def pod(obj: Obj) -> Obj:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    kept = without_status(obj)
    kept["spec"] = {
        key: [{"name": c.get("name"), "image": c.get("image")} for c in spec[key]]
        for key in CONTAINERS
        if spec.get(key)
    }
    kept["status"] = {key: status[key] for key in ("phase", "conditions") if key in status}
    for key in CONTAINER_STATUSES:
        if status.get(key):
            kept["status"][key] = [
                {"name": c.get("name"), "restartCount": c.get("restartCount", 0)} for c in status[key]
            ]
    return kept


def replicas_fields(fields: Obj) -> Obj:
    """The ``fieldsV1`` paths of ``spec.replicas`` and ``spec.template.roles[*].replicas`` only."""
    spec = fields.get("f:spec") or {}
    kept: Obj = {}
    if "f:replicas" in spec:
        kept["f:replicas"] = {}
    roles: Obj = {
        key: {"f:replicas": {}}
        for key, role in ((spec.get("f:template") or {}).get("f:roles") or {}).items()
        if isinstance(role, dict) and "f:replicas" in role
    }
    if roles:
        kept["f:template"] = {"f:roles": roles}
    return {"f:spec": kept} if kept else {}


def model_serving(obj: Obj) -> Obj:
    kept = without_status(obj)
    meta = dict(kept.get("metadata") or {})
    entries = []
    for entry in meta.get("managedFields") or ():
        fields = replicas_fields(entry.get("fieldsV1") or {})
        if fields:
            entries.append({**{k: v for k, v in entry.items() if k != "fieldsV1"}, "fieldsV1": fields})
    meta["managedFields"] = entries
    kept["metadata"] = meta
    return kept


PROJECTIONS: dict[str, Callable[[Obj], Obj]] = {
    Resource.PODS: pod,
    Resource.MODEL_SERVINGS: model_serving,
    Resource.MODEL_SERVERS: without_status,
    Resource.MODEL_ROUTES: without_status,
    Resource.AUTOSCALING_POLICIES: without_status,
    Resource.AUTOSCALING_POLICY_BINDINGS: without_status,
    Resource.POD_GROUPS: without_status,
    Resource.SERVICES: without_status,
}
"""Per viewed resource (ControllerRevisions are kept whole: their ``data`` is the template)."""
