"""What to run for a pod: the mock engine with the engine container's own command line, or nothing.

The engine container is the one that launches vLLM or SGLang (``ferry_mock_engine.cli.engine_argv``
tells it from Kthena's runtime sidecar); the mock engine accepts those flags. Sidecars, init
containers and Ray worker containers are treated as done (no process).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ferry_mock_engine.cli import engine_argv

DEFAULT_ENGINE_PORT = 8000


@dataclass(frozen=True)
class ProcessPlan:
    """``argv`` is None when the pod runs nothing locally (it is Ready as soon as it is bound)."""

    argv: list[str] | None
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    container: str = ""


def _field_value(pod: dict[str, Any], path: str, ip: str) -> str | None:
    meta = pod.get("metadata") or {}
    return {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "status.podIP": ip,
        "status.hostIP": "127.0.0.1",
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
    }.get(path)


def container_env(pod: dict[str, Any], container: dict[str, Any], ip: str) -> dict[str, str]:
    """Literal values and the downward-API field references a kubelet would resolve."""
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif (ref := (var.get("valueFrom") or {}).get("fieldRef")) and (
            value := _field_value(pod, ref.get("fieldPath", ""), ip)
        ):
            env[var["name"]] = value
    return env


def _port_of(argv: list[str]) -> int:
    for i, word in enumerate(argv):
        if word == "--port" and i + 1 < len(argv):
            return int(argv[i + 1])
        if word.startswith("--port="):
            return int(word.split("=", 1)[1])
    return DEFAULT_ENGINE_PORT


def plan_for(pod: dict[str, Any], ip: str) -> ProcessPlan:
    """The process a kubelet would run for ``pod`` here, on address ``ip``."""
    meta = pod.get("metadata") or {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        env = container_env(pod, container, ip)
        argv = engine_argv(container, env)
        if argv is not None:
            port = _port_of(argv)
            env.update(
                {"FERRY_MOCK_HOST": ip, "FERRY_MOCK_ID": f"{meta.get('namespace')}/{meta.get('name')}"}
            )
            return ProcessPlan(
                argv=[sys.executable, "-m", "ferry_mock_engine", *argv],
                port=port,
                env=env,
                container=str(container.get("name", "")),
            )
    return ProcessPlan(argv=None)
