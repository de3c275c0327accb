"""Ferry's own processes on the local stack: the six services and the local node.

Each service runs as ``python -m ferry_<name>`` under its own ServiceAccount (a kubeconfig with its own
token, :mod:`ferry_local.identities`) and with the stack's NATS URL, its
probes on a free port, and spans appended to one JSON-lines trace file (``FERRY_TRACE_FILE``).
Used by ``make up`` / ``make demo`` and by the end-to-end tests, so all start Ferry the same way.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ferry_local.identities import NATS_URL_KEYS, NODE_IDENTITY, with_identity
from ferry_local.processes import ManagedProcess, spawn
from ferry_local.readiness import free_port, http_ok, say, wait_until_ready

SERVICES = ("watcher", "converter", "applier", "status", "router", "autoscaler")


@dataclass
class SystemInfo:
    """Where the running services answer."""

    router_url: str
    router_metrics: str
    """The router's Prometheus ``/metrics`` URL."""
    probes: dict[str, str] = field(default_factory=dict)
    trace_file: str = ""
    processes: list[ManagedProcess] = field(default_factory=list)
    metrics: dict[str, str] = field(default_factory=dict)
    """Each service's Prometheus ``/metrics`` URL."""


def service_env(base_env: dict[str, str], trace_file: Path, probe_port: int) -> dict[str, str]:
    return {
        **base_env,
        "FERRY_PROBE_HOST": "127.0.0.1",
        "FERRY_PROBE_PORT": str(probe_port),
        "FERRY_TRACE_FILE": str(trace_file),
        "OTEL_TRACES_SAMPLER": "always_on",
        "PYTHONUNBUFFERED": "1",
    }


def start_service(
    name: str,
    base_env: dict[str, str],
    log_dir: Path,
    trace_file: Path,
    extra_env: dict[str, str] | None = None,
) -> tuple[ManagedProcess, str, str]:
    """Start one service; returns the process, the URL whose ``/readyz`` says it is ready and its
    ``/metrics`` URL."""
    probe_port = free_port()
    env = service_env(with_identity(name, base_env), trace_file, probe_port)
    ready_url = f"http://127.0.0.1:{probe_port}/readyz"
    if name == "router":
        router_port = int((extra_env or {}).get("FERRY_ROUTER_PORT") or free_port())
        env.update(
            FERRY_ROUTER_PORT=str(router_port),
            FERRY_ROUTER_METRICS_PORT=str(probe_port),
            FERRY_ROUTER_DEBUG_PORT=str(free_port()),
            FERRY_ROUTER_DRAIN_PERIOD="0s",  # no load balancer in front of a local router
        )
        ready_url = f"http://127.0.0.1:{router_port}/readyz"
    env.update(extra_env or {})
    process = spawn(f"ferry-{name}", [sys.executable, "-m", f"ferry_{name}"], log_dir, env=env)
    return process, ready_url, f"http://127.0.0.1:{probe_port}/metrics"


def start_node(
    kube_env: dict[str, str], log_dir: Path, extra_env: dict[str, str] | None = None
) -> ManagedProcess:
    """Start the local node (scheduler + kubelet running mock engines) for the cluster in ``kube_env``,
    under its own identity (``ferry-local-node``, ``deploy/local/rbac/local-node.yaml``), and wait
    until it holds its node name: a second node of the same name on one cluster refuses to start,
    and this raises :class:`StackError` with its reason."""
    probe_port = free_port()
    # the node never talks to NATS: it gets no NATS URL (the one in kube_env may be the admin's)
    env = {k: v for k, v in with_identity(NODE_IDENTITY, kube_env).items() if k not in NATS_URL_KEYS}
    env.update(
        FERRY_NODE_LOG_DIR=str(log_dir / "pods"), FERRY_PROBE_PORT=str(probe_port), PYTHONUNBUFFERED="1"
    )
    env.update(extra_env or {})
    process = spawn("ferry-local-node", [sys.executable, "-m", "ferry_local.node"], log_dir, env=env)
    try:
        ready = f"http://127.0.0.1:{probe_port}/readyz"
        wait_until_ready("the local node", process, lambda: http_ok(ready), 90)
    except BaseException:
        process.stop()
        raise
    return process


def start_system(
    base_env: dict[str, str],
    log_dir: Path,
    trace_file: Path,
    *,
    router_port: int | None = None,
    router_env: dict[str, str] | None = None,
    with_node: bool = True,
) -> SystemInfo:
    """Start every service (and the node), wait until each is ready, and return where they answer.

    ``base_env`` says where the cluster and NATS are (``KUBECONFIG``, ``FERRY_NATS_URL``);
    ``router_env`` adds to the router's own (e.g. a fixed debug port).
    """
    started: list[ManagedProcess] = []
    probes: dict[str, str] = {}
    metrics: dict[str, str] = {}
    try:
        for name in SERVICES:
            extra = None
            if name == "router":
                extra = {
                    **({"FERRY_ROUTER_PORT": str(router_port)} if router_port else {}),
                    **(router_env or {}),
                }
            say(f"starting ferry-{name}")
            process, ready_url, metrics[name] = start_service(name, base_env, log_dir, trace_file, extra)
            started.append(process)
            probes[name] = ready_url
        if with_node:
            say("starting the local node (binds pods, runs mock engines)")
            started.append(start_node(base_env, log_dir))
        for process, (name, url) in zip(started, probes.items(), strict=False):
            wait_until_ready(f"ferry-{name}", process, lambda url=url: http_ok(url), 90)  # type: ignore[misc]
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    router_url = probes["router"].removesuffix("/readyz")
    return SystemInfo(
        router_url=router_url,
        router_metrics=metrics["router"],
        metrics=metrics,
        probes=probes,
        trace_file=str(trace_file),
        processes=started,
    )
