"""Who sets a ModelServing's replicas: the applier only at creation and when the owner's value changes.

**Any ModelServing** the applier writes gets ``spec.replicas`` the way ``kubectl apply`` treats a
Deployment under an HPA: the value is applied when the ModelServing is created and when the owner's
value itself changes (the booster's ``replicas``/``minReplicas``, an LWS's ``replicas``), never
otherwise. The value last applied is kept on the object (annotation :data:`APPLIED_REPLICAS`, like
``kubectl.kubernetes.io/last-applied-configuration``). While the applier still owns the field (per
``managedFields``) it re-applies the same value, which changes nothing; once another manager has
written it — ``kubectl scale`` or an HPA/KEDA through ``/scale`` take the field over, as every Update
does — the applier leaves it out, so a booster edit, a resync or a restart keeps their value.

A ModelServing whose desired set also holds an AutoscalingPolicy(+Binding) scaling it is applied
like HPA-managed Deployments should be: without ``spec.replicas``. The first apply creates it with
the initial replicas; then the field is handed over once — an apply of just ``spec.replicas`` (same
value) by field manager ``ferry-autoscaler`` makes that manager a co-owner, so the applier's next
apply without the field releases it instead of deleting it. From then on only the autoscaler's
``/scale`` writes change replicas, and a booster edit never resets them.

Whatever the desired set says, a field the autoscaler has written (``spec.replicas`` or one role's
``replicas``, per ``managedFields``) is left to it too: a user's own policy on a booster's ModelServing
(e.g. a disaggregated policy scaling its roles) is not fought either, as HPA is not by ``kubectl apply``
of a manifest without ``replicas``.
"""

from __future__ import annotations

import json
from typing import Any

from ferry_schemas.autoscaling import REPLICAS_MANAGER

from ferry_applier.kinds import kind_of
from ferry_applier.kube import KubeClient, Obj

APPLIED_REPLICAS = "applier.ferry/applied-replicas"
"""Annotation: the owner's ``spec.replicas`` as of the applier's last apply (JSON)."""


def owns_replicas(obj: Obj, manager: str) -> bool:
    """Whether ``manager`` (an Apply or Update entry) owns ``spec.replicas`` of ``obj``."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") != manager or entry.get("subresource"):
            continue
        fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:replicas" in fields:
            return True
    return False


def autoscaler_fields(obj: Obj | None) -> tuple[bool, set[str]]:
    """Whether :data:`REPLICAS_MANAGER` owns ``spec.replicas``, and the roles whose ``replicas`` it owns."""
    owns_total, roles = False, set()
    for entry in ((obj or {}).get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") != REPLICAS_MANAGER:
            continue
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        owns_total = owns_total or "f:replicas" in spec
        for key, fields in ((spec.get("f:template") or {}).get("f:roles") or {}).items():
            if key.startswith("k:") and isinstance(fields, dict) and "f:replicas" in fields:
                try:
                    roles.add(str(json.loads(key[2:]).get("name")))
                except ValueError:
                    continue
    return owns_total, roles


def without_replicas(body: Obj, *, total: bool = True, roles: set[str] | frozenset[str] = frozenset()) -> Obj:
    """``body`` without ``spec.replicas`` (when ``total``) and without the named roles' ``replicas``."""
    spec = {k: v for k, v in (body.get("spec") or {}).items() if not (total and k == "replicas")}
    template = spec.get("template")
    if roles and isinstance(template, dict):
        spec["template"] = {
            **template,
            "roles": [
                {k: v for k, v in role.items() if k != "replicas"} if role.get("name") in roles else role
                for role in template.get("roles") or []
            ],
        }
    return {**body, "spec": spec}


def serving_body(body: Obj, previous: Obj | None, manager: str) -> Obj:
    """What the applier (field manager ``manager``) applies of a ModelServing no desired policy scales.

    ``spec.replicas`` is kept when the object is new, when ``manager`` still owns it, or when the
    owner's value differs from the one last applied; otherwise it is left to whoever wrote it. Replica
    fields the autoscaler owns (a user's own policy on the ModelServing) are always left to it.
    """
    spec = body.get("spec") or {}
    if "replicas" in spec:
        meta = body.get("metadata") or {}
        annotations = {**(meta.get("annotations") or {}), APPLIED_REPLICAS: json.dumps(spec["replicas"])}
        body = {**body, "metadata": {**meta, "annotations": annotations}}
    autoscaler_total, roles = autoscaler_fields(previous)
    total = (
        previous is not None
        and "replicas" in spec
        and (
            autoscaler_total
            or not (owns_replicas(previous, manager) or replicas_changed(spec["replicas"], previous))
        )
    )
    if not total and not roles:
        return body
    return without_replicas(body, total=total, roles=roles)


def replicas_changed(replicas: Any, previous: Obj) -> bool:
    """Whether the owner's replicas differ from the value last applied (unknown counts as unchanged)."""
    last = ((previous.get("metadata") or {}).get("annotations") or {}).get(APPLIED_REPLICAS)
    return last is not None and last != json.dumps(replicas)


async def apply_serving(kube: KubeClient, body: Obj, previous: Obj | None, autoscaled: bool) -> Obj:
    """Apply a ModelServing, leaving its replicas to whoever scales it (see the module docstring)."""
    if autoscaled:
        return await apply_autoscaled(kube, body, previous)
    return await kube.apply(serving_body(body, previous, kube.field_manager))


def replicas_only(body: Obj, replicas: Any) -> Obj:
    meta = body["metadata"]
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": replicas},
    }


async def apply_autoscaled(kube: KubeClient, body: Obj, previous: Obj | None) -> Obj:
    """Apply ``body`` leaving ``spec.replicas`` to the autoscaler (see the module docstring)."""
    if previous is None:
        previous = await kube.get(kind_of(body), body["metadata"]["namespace"], body["metadata"]["name"])
    if previous is None:
        previous = await kube.apply(body, whole=True)  # created with the initial replicas
    if owns_replicas(previous, kube.field_manager):
        current = (previous.get("spec") or {}).get("replicas", (body.get("spec") or {}).get("replicas"))
        await kube.apply(replicas_only(body, current), field_manager=REPLICAS_MANAGER)
    _, roles = autoscaler_fields(previous)
    return await kube.apply(without_replicas(body, roles=roles))
