"""LeaderWorkerSet → ModelServing (``spec/serving.md`` §6.10, Kthena's ``LWSController``).

A LeaderWorkerSet (``leaderworkerset.x-k8s.io/v1``) is served as a ModelServing of the same name,
owned by it: one role ``default`` whose entry pod is the leader and whose workers are the rest of
the group. The ``lws-standard-labels`` plugin gives the pods the LWS labels. The ModelServing is
then converted and applied like any other; status flows back to the LWS (the status service).
"""

from __future__ import annotations

from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.bus import ConversionError
from ferry_schemas.workload import BUILT_IN, LWS_STANDARD_LABELS

from ferry_converter.values import int_or

MANAGED_KINDS = ["ModelServing"]
ROLE = "default"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _pod_template(template: Any) -> dict[str, Any] | None:
    """A PodTemplateSpec as a role template: its labels and annotations, and its spec."""
    if not isinstance(template, dict):
        return None
    meta = _dict(template.get("metadata"))
    out: dict[str, Any] = {"spec": template.get("spec") or {}}
    picked = {key: meta[key] for key in ("labels", "annotations") if meta.get(key)}
    if picked:
        out["metadata"] = picked
    return out


def convert_lws(obj: dict[str, Any]) -> tuple[list[dict[str, Any]], list[ConversionError]]:
    """The ModelServing one LeaderWorkerSet is served as, or why it cannot be."""
    meta, spec = _dict(obj.get("metadata")), _dict(obj.get("spec"))
    lwt = _dict(spec.get("leaderWorkerTemplate"))
    worker = _pod_template(lwt.get("workerTemplate"))
    if worker is None:
        message = "a LeaderWorkerSet needs spec.leaderWorkerTemplate.workerTemplate"
        return [], [ConversionError(field="spec.leaderWorkerTemplate.workerTemplate", message=message)]
    leader = _pod_template(lwt.get("leaderTemplate")) or worker
    size = int_or(lwt.get("size"), 1)
    serving = {
        "apiVersion": L.WORKLOAD_API_VERSION,
        "kind": "ModelServing",
        "metadata": {"name": str(meta.get("name") or ""), "namespace": str(meta.get("namespace") or "")},
        "spec": {
            "replicas": int_or(spec.get("replicas"), 1),
            "plugins": [{"name": LWS_STANDARD_LABELS, "type": BUILT_IN}],
            "template": {
                "roles": [
                    {
                        "name": ROLE,
                        "replicas": 1,
                        "entryTemplate": leader,
                        "workerReplicas": max(size - 1, 0),
                        "workerTemplate": worker,
                    }
                ]
            },
        },
    }
    return [serving], []
