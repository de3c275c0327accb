"""Autoscaled ModelServings: ``spec.replicas`` belongs to the autoscaler, not to the applier.

A ModelServing whose desired set also holds an AutoscalingPolicy(+Binding) scaling it is applied
like HPA-managed Deployments should be: without ``spec.replicas``. The first apply creates it with
the initial replicas; then the field is handed over once — an apply of just ``spec.replicas`` (same
value) by field manager ``ferry-autoscaler`` makes that manager a co-owner, so the applier's next
apply without the field releases it instead of deleting it. From then on only the autoscaler's
``/scale`` writes change replicas, and a booster edit never resets them.
"""

from __future__ import annotations

from typing import Any

from ferry_schemas.autoscaling import REPLICAS_MANAGER

from ferry_applier.kinds import kind_of
from ferry_applier.kube import KubeClient, Obj


def owns_replicas(obj: Obj, manager: str) -> bool:
    """Whether ``manager`` (an Apply or Update entry) owns ``spec.replicas`` of ``obj``."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") != manager or entry.get("subresource"):
            continue
        fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:replicas" in fields:
            return True
    return False


def without_replicas(body: Obj) -> Obj:
    spec = {k: v for k, v in (body.get("spec") or {}).items() if k != "replicas"}
    return {**body, "spec": spec}


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
        previous = await kube.apply(body)  # created with the initial replicas
    if owns_replicas(previous, kube.field_manager):
        current = (previous.get("spec") or {}).get("replicas", (body.get("spec") or {}).get("replicas"))
        await kube.apply(replicas_only(body, current), field_manager=REPLICAS_MANAGER)
    return await kube.apply(without_replicas(body))
