"""ModelBooster backend → ModelServing (``spec/booster.md`` §3.9-§3.11, LoRA from §8.3)."""

from __future__ import annotations

import hashlib
from typing import Any

from ferry_schemas import labels as L

from ferry_converter.booster import envvars as E
from ferry_converter.booster.backends import VLLM, VLLM_DISAGGREGATED, Backend
from ferry_converter.booster.command import build_command, device_count, ray_worker_command, uses_gpu
from ferry_converter.booster.meta import BoosterRef, child, revision_of, stamp_revision
from ferry_converter.booster.options import RenderOptions
from ferry_converter.booster.storage import (
    CacheVolumeError,
    cache_mount,
    cache_path,
    cache_volume,
    model_download_path,
)
from ferry_converter.booster.workers import ConfigError, engine_port, worker_type
from ferry_converter.errors import ConversionFailure
from ferry_converter.values import int_or

RESTART_GRACE_PERIOD_SECONDS = 60
ENGINE_TERMINATION_GRACE_SECONDS = 300
DSHM_VOLUME = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
DSHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}

DRAIN_SCRIPT = """while true; do
  METRICS=$(curl -s --max-time 2 http://localhost:{port}/metrics)
  RUNNING=$(echo "$METRICS" | grep 'vllm:num_requests_running' | grep -v '#' | awk '{{print $2}}' || true)
  WAITING=$(echo "$METRICS" | grep 'vllm:num_requests_waiting' | grep -v '#' | awk '{{print $2}}' || true)
  if [ -z "$RUNNING" ]; then
    echo "Terminating: Metrics endpoint unavailable, exiting preStop" >> /proc/1/fd/1
    exit 0
  fi
  if [ "$RUNNING" = "0.0" ] && [ "$WAITING" = "0.0" ]; then
    echo "Terminating: No active or waiting requests, safe to terminate" >> /proc/1/fd/1
    exit 0
  else
    echo "Terminating: Running: $RUNNING, Waiting: $WAITING" >> /proc/1/fd/1
    sleep 5
  fi
done
"""


def _last_of(backend: Backend, kind: str) -> tuple[int, dict[str, Any]] | None:
    found: tuple[int, dict[str, Any]] | None = None
    for index, worker in enumerate(backend.workers):
        if worker_type(worker) == kind:
            found = (index, worker)
    return found


def checked_engine_port(backend: Backend) -> int:
    try:
        return engine_port(backend.workers)
    except ConfigError as exc:
        path = (
            f"{backend.path}.workers[{exc.index}].config.port"
            if exc.index >= 0
            else f"{backend.path}.workers"
        )
        raise ConversionFailure(path, str(exc)) from None


class _Context:
    """What every pod template of one backend shares."""

    def __init__(self, ref: BoosterRef, backend: Backend, options: RenderOptions) -> None:
        self.ref = ref
        self.backend = backend
        self.options = options
        if not backend.cache_uri:
            raise ConversionFailure(
                f"{backend.path}.cacheURI",
                "cacheURI is required: set hostpath://<dir> or pvc://<claim> to hold the model weights",
            )
        self.port = checked_engine_port(backend)
        try:
            self.volume = cache_volume(backend.name, backend.cache_uri)
        except CacheVolumeError as exc:
            raise ConversionFailure(f"{backend.path}.cacheURI", str(exc)) from None
        self.mount = cache_mount(backend.name, backend.cache_uri)
        self.model_path = model_download_path(backend.cache_uri, backend.model_uri)
        self.runtime_port = E.env_int(backend.env, E.RUNTIME_PORT, E.DEFAULT_RUNTIME_PORT)
        self.runtime_url = E.env_str(backend.env, E.RUNTIME_URL, f"http://localhost:{self.port}")
        self.metrics_path = E.env_str(backend.env, E.RUNTIME_METRICS_PATH, E.DEFAULT_METRICS_PATH)
        self.install_dependencies = uses_gpu(backend.workers) and not E.env_bool(
            backend.env, E.SKIP_ENGINE_DEPENDENCY_INSTALL, False
        )
        self.lora_paths = [
            (str(adapter.get("name")), self._lora_path(str(adapter.get("artifactURL") or "")))
            for adapter in backend.lora_adapters
        ]

    def _lora_path(self, artifact_url: str) -> str:
        return cache_path(self.backend.cache_uri) + "/" + hashlib.md5(artifact_url.encode()).hexdigest()

    def lora_args(self) -> list[str]:
        if not self.lora_paths:
            return []
        return ["--enable-lora", "--lora-modules", *[f"{name}={path}" for name, path in self.lora_paths]]

    def command(self, worker: dict[str, Any], index: int, ray: tuple[int, int] | None) -> list[str]:
        try:
            return build_command(
                model_path=self.model_path,
                config=worker.get("config"),
                extra_args=self.lora_args(),
                ray=ray,
                install_dependencies=self.install_dependencies,
            )
        except ConfigError as exc:
            raise ConversionFailure(f"{self.backend.path}.workers[{index}].config", str(exc)) from None

    def init_containers(self) -> list[dict[str, Any]]:
        backend = self.backend
        downloader: dict[str, Any] = {
            "name": f"{self.ref.name}-model-downloader",
            "image": self.options.downloader_image,
            "args": ["--source", backend.model_uri, "--output-dir", self.model_path],
            "volumeMounts": [dict(self.mount)],
        }
        env = E.downloader_env(backend.env)
        if env:
            downloader["env"] = env
        if backend.env_from:
            downloader["envFrom"] = [dict(item) for item in backend.env_from]
        containers = [downloader]
        for index, adapter in enumerate(backend.lora_adapters):
            lora: dict[str, Any] = {
                "name": f"{self.ref.name}-lora-downloader-{index}",
                "image": self.options.downloader_image,
                "args": [
                    "--source",
                    str(adapter.get("artifactURL") or ""),
                    "--output-dir",
                    self.lora_paths[index][1],
                ],
                "volumeMounts": [dict(self.mount)],
            }
            if backend.env:
                lora["env"] = [dict(item) for item in backend.env]
            if backend.env_from:
                lora["envFrom"] = [dict(item) for item in backend.env_from]
            containers.append(lora)
        return containers

    def runtime_container(
        self, engine: str, env: list[dict[str, Any]], with_env_from: bool
    ) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": "runtime",
            "image": self.options.runtime_image,
            "ports": [{"containerPort": self.runtime_port}],
            "env": env,
            "args": [
                "--port",
                str(self.runtime_port),
                "--engine",
                engine,
                "--engine-base-url",
                self.runtime_url,
                "--engine-metrics-path",
                self.metrics_path,
                "--pod",
                "$(POD_NAME).$(NAMESPACE)",
                "--model",
                self.ref.name,
            ],
        }
        if with_env_from and self.backend.env_from:
            container["envFrom"] = [dict(item) for item in self.backend.env_from]
        if self.options.runtime_command:
            container["command"] = list(self.options.runtime_command)
        return container

    def pod_spec(self, worker: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.backend.runtime_class_name is not None:
            spec["runtimeClassName"] = self.backend.runtime_class_name
        affinity = worker.get("affinity")
        spec["affinity"] = affinity if isinstance(affinity, dict) else {}
        tolerations = worker.get("tolerations")
        if isinstance(tolerations, list):
            spec["tolerations"] = tolerations
        spec["initContainers"] = self.init_containers()
        spec.update(body)
        return spec

    def template(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"labels": self.ref.labels(self.backend.name)}, "spec": spec}


def _resources(worker: dict[str, Any]) -> dict[str, Any]:
    resources = worker.get("resources")
    return resources if isinstance(resources, dict) else {}


def _vllm_roles(ctx: _Context) -> tuple[list[dict[str, Any]], dict[str, int]]:
    backend = ctx.backend
    found = _last_of(backend, "server")
    if found is None:
        raise ConversionFailure(
            f"{backend.path}.workers",
            f"server worker not found in backend: {backend.name}; "
            "a vLLM backend needs one worker of type server",
        )
    index, server = found
    pods = int_or(server.get("pods"), 0)
    ray = (pods, device_count(server)) if pods > 1 else None
    env = E.engine_env(backend.env)
    engine = {
        "name": "engine",
        "image": server.get("image", ""),
        "command": ctx.command(server, index, ray),
        "env": env,
        "resources": _resources(server),
        "volumeMounts": [dict(ctx.mount), dict(DSHM_MOUNT)],
        "readinessProbe": {
            "failureThreshold": 3,
            "httpGet": {"path": "/health", "port": ctx.port, "scheme": "HTTP"},
            "initialDelaySeconds": 180,
            "periodSeconds": 5,
            "successThreshold": 1,
            "timeoutSeconds": 1,
        },
        "lifecycle": {
            "preStop": {"exec": {"command": ["/bin/sh", "-c", DRAIN_SCRIPT.format(port=ctx.port)]}}
        },
    }
    runtime = ctx.runtime_container(backend.type.lower(), E.engine_env(backend.env), with_env_from=True)
    runtime["readinessProbe"] = {
        "httpGet": {"path": "/health", "port": ctx.runtime_port},
        "initialDelaySeconds": 5,
        "periodSeconds": 10,
    }
    entry = ctx.pod_spec(
        server,
        {
            "terminationGracePeriodSeconds": ENGINE_TERMINATION_GRACE_SECONDS,
            "volumes": [ctx.volume, dict(DSHM_VOLUME)],
            "containers": [runtime, engine],
        },
    )
    worker_container = {
        "name": f"{backend.name.lower()}-{backend.type.lower()}-worker",
        "image": server.get("image", ""),
        "command": ray_worker_command(),
        "env": [dict(item) for item in backend.env],
        "resources": _resources(server),
        "volumeMounts": [dict(ctx.mount), dict(DSHM_MOUNT)],
    }
    worker_spec = ctx.pod_spec(
        server, {"volumes": [ctx.volume, dict(DSHM_VOLUME)], "containers": [worker_container]}
    )
    replicas = int_or(server.get("replicas"), 0)
    role = {
        "name": "leader",
        "replicas": replicas,
        "workerReplicas": max(pods - 1, 0),
        "entryTemplate": ctx.template(entry),
        "workerTemplate": ctx.template(worker_spec),
    }
    return [role], {"leader": replicas}


def _pd_roles(ctx: _Context) -> tuple[list[dict[str, Any]], dict[str, int]]:
    backend = ctx.backend
    roles: list[dict[str, Any]] = []
    gang: dict[str, int] = {}
    found = {kind: _last_of(backend, kind) for kind in ("prefill", "decode")}
    for kind, item in found.items():
        if item is None:
            raise ConversionFailure(
                f"{backend.path}.workers",
                f"{kind} worker not found in backend: a vLLMDisaggregated backend needs one prefill "
                "and one decode worker",
            )
    for kind, extra in (("prefill", E.PREFILL_EXTRA_ENV), ("decode", E.DECODE_EXTRA_ENV)):
        item = found[kind]
        assert item is not None
        index, worker = item
        env = E.engine_env(backend.env, *extra)
        runtime = ctx.runtime_container(backend.type.lower(), env, with_env_from=kind == "decode")
        vllm = {
            "name": "vllm",
            "image": worker.get("image", ""),
            "ports": [{"containerPort": ctx.port}],
            "env": E.engine_env(backend.env, *extra),
            "command": ctx.command(worker, index, None),
            "imagePullPolicy": "IfNotPresent",
            "resources": _resources(worker),
            "readinessProbe": {
                "initialDelaySeconds": 5,
                "periodSeconds": 5,
                "failureThreshold": 3,
                "httpGet": {"path": "/health", "port": ctx.port},
            },
            "livenessProbe": {
                "initialDelaySeconds": 180,
                "periodSeconds": 5,
                "failureThreshold": 3,
                "httpGet": {"path": "/health", "port": ctx.port},
            },
            "volumeMounts": [dict(ctx.mount)],
        }
        entry = ctx.pod_spec(worker, {"volumes": [ctx.volume], "containers": [runtime, vllm]})
        replicas = int_or(worker.get("replicas"), 0)
        roles.append(
            {
                "name": kind,
                "replicas": replicas,
                "workerReplicas": 0,
                "entryTemplate": ctx.template(entry),
                "workerTemplate": {"spec": {"containers": []}},
            }
        )
        gang[kind] = replicas
    return roles, gang


def build_model_serving(ref: BoosterRef, backend: Backend, options: RenderOptions) -> dict[str, Any]:
    """The ModelServing ``<booster>-<backend>`` for one backend, revision label stamped."""
    ctx = _Context(ref, backend, options)
    if backend.type == VLLM:
        roles, gang = _vllm_roles(ctx)
    elif backend.type == VLLM_DISAGGREGATED:
        roles, gang = _pd_roles(ctx)
    else:
        raise ConversionFailure(f"{backend.path}.type", f"not support model backend type: {backend.type}")
    spec: dict[str, Any] = {}
    if backend.scheduler_name:
        spec["schedulerName"] = backend.scheduler_name
    spec["replicas"] = backend.serving_replicas
    spec["template"] = {
        "restartGracePeriodSeconds": RESTART_GRACE_PERIOD_SECONDS,
        "gangPolicy": {"minRoleReplicas": gang},
        "roles": roles,
    }
    obj = child(
        L.WORKLOAD_API_VERSION,
        "ModelServing",
        L.booster_child_name(ref.name, backend.name),
        ref,
        backend.name,
        spec,
    )
    # The revision ignores spec.replicas: a pure scale change must not roll every pod (Kthena's does).
    revision = revision_of({k: v for k, v in spec.items() if k != "replicas"})
    stamp_revision(obj, revision)
    for role in roles:
        for key in ("entryTemplate", "workerTemplate"):
            template_labels = role[key].get("metadata", {}).get("labels")
            if template_labels is not None:
                template_labels[L.BOOSTER_REVISION] = revision
    return obj
