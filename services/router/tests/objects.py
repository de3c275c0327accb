"""Small builders for the Kubernetes objects the router reads (spec shapes, camelCase)."""

from __future__ import annotations

from typing import Any


def route(
    name: str,
    model: str = "",
    rules: list[dict[str, Any]] | None = None,
    *,
    namespace: str = "default",
    loras: list[str] | None = None,
    created: str = "2026-01-01T00:00:00Z",
    rate_limit: dict[str, Any] | None = None,
    server: str = "srv",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "rules": rules or [{"name": "default", "targetModels": [{"modelServerName": server}]}]
    }
    if model:
        spec["modelName"] = model
    if loras:
        spec["loraAdapters"] = loras
    if rate_limit:
        spec["rateLimit"] = rate_limit
    return {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": spec,
    }


def server(
    name: str,
    labels: dict[str, str],
    *,
    namespace: str = "default",
    model: str | None = None,
    port: int = 8000,
    engine: str = "vLLM",
    pd: dict[str, Any] | None = None,
    connector: str | None = None,
    timeout: str | None = None,
    retry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    selector: dict[str, Any] = {"matchLabels": labels}
    if pd:
        selector["pdGroup"] = pd
    spec: dict[str, Any] = {
        "workloadSelector": selector,
        "workloadPort": {"port": port},
        "inferenceEngine": engine,
    }
    if model:
        spec["model"] = model
    if connector:
        spec["kvConnector"] = {"type": connector}
    if timeout or retry:
        spec["trafficPolicy"] = {k: v for k, v in (("timeout", timeout), ("retry", retry)) if v}
    return {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": "ModelServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def pod(
    name: str,
    labels: dict[str, str],
    ip: str = "127.0.0.1",
    *,
    namespace: str = "default",
    ready: bool = True,
    phase: str = "Running",
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "status": {
            "phase": phase,
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }
