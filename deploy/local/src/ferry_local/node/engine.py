"""What to run for a pod: the mock engine with the engine container's own command line, or nothing.

The engine container is the one that launches vLLM or SGLang (``ferry_mock_engine.cli.engine_argv``
tells it from Kthena's runtime sidecar); the mock engine accepts those flags. Sidecars, init
containers and Ray worker containers are treated as done (no process).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ferry_mock_engine.cli import ENV_HOST, ENV_ID, ENV_RUNTIME_PORT, engine_argv
from ferry_mock_engine.identity import ENV_TOKEN, new_secret

DEFAULT_ENGINE_PORT = 8000


@dataclass(frozen=True)
class ProcessPlan:
    """``argv`` is None when the pod runs nothing locally (it is Ready as soon as it is bound)."""

    argv: list[str] | None
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    container: str = ""
    token: str = ""
    ferry: bool = False
    """A Ferry service (:mod:`ferry_local.node.ferrypod`): ready when ``GET health_path`` answers 200."""
    health_path: str = "/health"


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


Engine = tuple[dict[str, Any], dict[str, str], list[str]]  # container, its env, its engine argv


def _engine_container(pod: dict[str, Any], ip: str) -> Engine | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        env = container_env(pod, container, ip)
        argv = engine_argv(container, env)
        if argv is not None:
            return container, env, argv
    return None


def engine_port(pod: dict[str, Any]) -> int | None:
    """The port the pod's engine will listen on, or None when the pod runs no engine here."""
    found = _engine_container(pod, "")
    return None if found is None else _port_of(found[2])


def runtime_port(pod: dict[str, Any]) -> int | None:
    """The port of Kthena's runtime sidecar (the container that proxies ``--engine-base-url``)."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        args = [str(a) for a in container.get("args") or []]
        if "--engine-base-url" in args or any(a.startswith("--engine-base-url=") for a in args):
            return _port_of(args) if "--port" in args or any(a.startswith("--port=") for a in args) else None
    return None


def plan_for(pod: dict[str, Any], ip: str) -> ProcessPlan:
    """The process a kubelet would run for ``pod`` here, on address ``ip``, with a fresh identity
    token the engine must prove it holds before the pod counts as Ready (``ferry_mock_engine.identity``).

    A pod with Kthena's runtime sidecar gets the sidecar's ``/metrics`` (engine metrics plus the
    ``kthena:*`` names autoscaling policies use) served by the mock engine on the sidecar's port."""
    meta = pod.get("metadata") or {}
    found = _engine_container(pod, ip)
    if found is None:
        return ProcessPlan(argv=None)
    container, env, argv = found
    token = new_secret()
    env.update(
        {
            ENV_HOST: ip,
            ENV_ID: f"{meta.get('namespace')}/{meta.get('name')}",
            ENV_TOKEN: token,
        }
    )
    sidecar = runtime_port(pod)
    if sidecar is not None and sidecar != _port_of(argv):
        env[ENV_RUNTIME_PORT] = str(sidecar)
    return ProcessPlan(
        argv=[sys.executable, "-m", "ferry_mock_engine", *argv],
        port=_port_of(argv),
        env=env,
        container=str(container.get("name", "")),
        token=token,
    )
