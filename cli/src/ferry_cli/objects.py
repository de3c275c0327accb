"""Facts read off Kubernetes objects: age, conditions, pod readiness and serving endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferry_schemas import labels as L

Obj = dict[str, Any]


def age(obj: Obj, now: datetime | None = None) -> str:
    """kubectl's AGE: ``45s``, ``12m``, ``3h``, ``5d``."""
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "?"
    created = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    seconds = max(0, int(((now or datetime.now(UTC)) - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "d" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def conditions(obj: Obj) -> list[Obj]:
    return list(((obj.get("status") or {}).get("conditions")) or [])


def condition_status(obj: Obj, type_: str) -> str:
    """``True``/``False``/``Unknown``, or ``-`` when the condition is absent."""
    for condition in conditions(obj):
        if condition.get("type") == type_:
            return str(condition.get("status", "Unknown"))
    return "-"


def is_ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def pod_phase(pod: Obj) -> str:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    return str((pod.get("status") or {}).get("phase") or "Pending")


def is_entry(pod: Obj) -> bool:
    return (pod["metadata"].get("labels") or {}).get(L.MS_ENTRY) == L.ENTRY_VALUE


def pod_port(pod: Obj, servers: list[Obj]) -> int | None:
    """The engine port: the ``workloadPort`` of the ModelServer selecting the pod (as the router
    reads it), else the first container port the pod declares."""
    labels = pod["metadata"].get("labels") or {}
    for server in servers:
        spec = server.get("spec") or {}
        wanted = (spec.get("workloadSelector") or {}).get("matchLabels") or {}
        port = (spec.get("workloadPort") or {}).get("port")
        if wanted and port and all(labels.get(k) == v for k, v in wanted.items()):
            return int(port)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("containerPort"):
                return int(port["containerPort"])
    return None


@dataclass(frozen=True)
class Endpoint:
    """An entry pod the router can send requests to (when ready)."""

    pod: str
    serving: str
    role: str
    address: str
    ready: bool


def endpoints(pods: list[Obj], servers: list[Obj]) -> list[Endpoint]:
    """One per entry pod: ``ip:port`` (``ip`` alone when no port is declared), ready or not."""
    found = []
    for pod in pods:
        if not is_entry(pod):
            continue
        labels = pod["metadata"].get("labels") or {}
        ip = (pod.get("status") or {}).get("podIP") or ""
        port = pod_port(pod, servers)
        address = f"{ip}:{port}" if ip and port else ip or "<none>"
        found.append(
            Endpoint(
                pod=pod["metadata"]["name"],
                serving=labels.get(L.MS_NAME, ""),
                role=labels.get(L.MS_ROLE, ""),
                address=address,
                ready=is_ready(pod),
            )
        )
    return found


def replicas(obj: Obj) -> str:
    """``available/desired`` from a booster's or serving's status and spec."""
    status = obj.get("status") or {}
    desired = status.get("replicas")
    if desired is None:
        spec = obj.get("spec") or {}
        backend = spec.get("backend") or {}
        desired = spec.get("replicas", backend.get("replicas"))
    return f"{status.get('availableReplicas', 0)}/{desired if desired is not None else '?'}"
