"""Pods that run Ferry's own image: the service's entry point as a process, as a kubelet would run it.

A pod whose container image is Ferry's (``FERRY_NODE_FERRY_IMAGES``, default ``ferry``: the image
repository the chart and ``deploy/`` use) runs the container's ``command``/``args`` — a console
script of this workspace (``ferry-watcher`` …) — with

* the container's environment: literal values, ``envFrom`` ConfigMaps/Secrets and ``valueFrom``
  field, ConfigMap and Secret references, resolved from the API server as a kubelet does;
* its volumes at their mount paths: ``configMap`` (one file per key), ``emptyDir``, and the
  ServiceAccount token (a TokenRequest bound to the pod, with ``ca.crt`` and ``namespace``) at
  ``/var/run/secrets/kubernetes.io/serviceaccount`` unless ``automountServiceAccountToken`` is false;
* in-cluster config: ``KUBERNETES_SERVICE_HOST``/``PORT`` name the API server.

Mounts need a private mount namespace (``unshare --mount``, root, as a kubelet is): the process
sees its own files at the paths the manifest names and nothing leaks to the host's view. The pod
has no network namespace of its own: an address the pod would bind on all interfaces (``0.0.0.0``
in its environment) becomes the pod's own loopback address, which is what "all interfaces" means
inside a pod. Readiness follows the container's ``readinessProbe`` (``httpGet``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubernetes_asyncio import client

from ferry_local.node.engine import ProcessPlan, container_env

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
ALL_INTERFACES = "0.0.0.0"
Obj = dict[str, Any]


class PodSetupError(RuntimeError):
    """The pod cannot start (a missing ConfigMap, an unknown volume type…); the message says why."""


def ferry_images() -> set[str]:
    return {i.strip() for i in os.environ.get("FERRY_NODE_FERRY_IMAGES", "ferry").split(",") if i.strip()}


def image_repository(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def ferry_container(pod: Obj) -> Obj | None:
    """The pod's container that runs Ferry's image, if any."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        if image_repository(str(container.get("image", ""))) in ferry_images():
            return dict(container)
    return None


class FerryPods:
    """Plans Ferry-image pods: resolves env and volumes through the API server, issues the token."""

    def __init__(self, api: client.ApiClient, state_dir: Path) -> None:
        self._core = client.CoreV1Api(api)
        self._api = api
        self._state = state_dir

    async def plan(self, pod: Obj, ip: str) -> ProcessPlan:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        container = ferry_container(pod)
        assert container is not None
        namespace = meta["namespace"]
        root = self._state / f"{namespace}_{meta['name']}_{meta['uid'][:8]}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        env = await self._env(pod, container, ip)
        mounts = await self._volumes(pod, container, root)
        if spec.get("automountServiceAccountToken", True) is not False:
            mounts.append((str(await self._token_dir(pod, root)), SA_DIR))
        env.update(self._in_cluster())
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if not argv:
            raise PodSetupError(f"container {container['name']} has no command (Ferry's image needs one)")
        executable = Path(sys.executable).parent / argv[0]
        if not executable.exists():
            raise PodSetupError(f"{argv[0]} is not a program of Ferry's image")
        argv[0] = str(executable)
        spec_file = root / "run.json"
        spec_file.write_text(json.dumps({"argv": argv, "env": env, "mounts": mounts}))
        path, port = _readiness(container)
        return ProcessPlan(
            argv=["unshare", "--mount", "--propagation", "private",
                  sys.executable, "-m", "ferry_local.node.podrun", str(spec_file)],
            port=port, env={}, container=str(container.get("name", "")), ferry=True, health_path=path,
        )  # fmt: skip

    # ------------------------------------------------------------------ environment

    async def _env(self, pod: Obj, container: Obj, ip: str) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if ref := source.get("configMapRef"):
                data = await self._config_map(namespace, ref["name"], optional=ref.get("optional", False))
            elif ref := source.get("secretRef"):
                data = await self._secret(namespace, ref["name"], optional=ref.get("optional", False))
            else:
                continue
            env.update({f"{prefix}{k}": v for k, v in data.items()})
        env.update(container_env(pod, container, ip))  # literals and fieldRefs (the engine path's rules)
        for var in container.get("env") or []:
            source = var.get("valueFrom") or {}
            if ref := source.get("configMapKeyRef"):
                data = await self._config_map(namespace, ref["name"], optional=ref.get("optional", False))
                if ref["key"] in data:
                    env[var["name"]] = data[ref["key"]]
            elif ref := source.get("secretKeyRef"):
                data = await self._secret(namespace, ref["name"], optional=ref.get("optional", False))
                if ref["key"] in data:
                    env[var["name"]] = data[ref["key"]]
        env = {k: _expand(v, env) for k, v in env.items()}
        return {k: ip if v == ALL_INTERFACES else v for k, v in env.items()}

    def _in_cluster(self) -> dict[str, str]:
        server = urlparse(str(self._api.configuration.host))
        return {
            "KUBERNETES_SERVICE_HOST": str(server.hostname or "127.0.0.1"),
            "KUBERNETES_SERVICE_PORT": str(server.port or 443),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": "/tmp",
            "PYTHONUNBUFFERED": "1",
        }

    async def _config_map(self, namespace: str, name: str, *, optional: bool) -> dict[str, str]:
        return await self._data("configmap", namespace, name, optional=optional)

    async def _secret(self, namespace: str, name: str, *, optional: bool) -> dict[str, str]:
        return await self._data("secret", namespace, name, optional=optional)

    async def _data(self, kind: str, namespace: str, name: str, *, optional: bool) -> dict[str, str]:
        """A ConfigMap's or Secret's data (decoded); an optional one that is absent is empty."""
        read = (
            self._core.read_namespaced_config_map
            if kind == "configmap"
            else self._core.read_namespaced_secret
        )
        try:
            found = await read(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise PodSetupError(f'{kind} "{name}" not found') from exc
        data = dict(found.data or {})
        if kind == "secret":
            return {str(k): base64.b64decode(v).decode() for k, v in data.items()}
        return {str(k): str(v) for k, v in data.items()}

    # ------------------------------------------------------------------ volumes

    async def _volumes(self, pod: Obj, container: Obj, root: Path) -> list[tuple[str, str]]:
        namespace = pod["metadata"]["namespace"]
        volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
        mounts: list[tuple[str, str]] = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                raise PodSetupError(f"volumeMount {mount['name']} names no volume of the pod")
            source = root / "volumes" / mount["name"]
            if not source.exists():
                source.mkdir(parents=True)
                if ref := volume.get("configMap"):
                    data = await self._config_map(namespace, ref["name"], optional=ref.get("optional", False))
                    _write_files(source, data, ref.get("items"))
                elif ref := volume.get("secret"):
                    data = await self._secret(
                        namespace, ref["secretName"], optional=ref.get("optional", False)
                    )
                    _write_files(source, data, ref.get("items"))
                elif "emptyDir" not in volume:
                    kinds = sorted(set(volume) - {"name"})
                    raise PodSetupError(f"volume {mount['name']}: {kinds} volumes are not supported here")
            target = mount["mountPath"]
            if sub := mount.get("subPath"):
                source = source / str(sub)
            mounts.append((str(source), target))
        return mounts

    async def _token_dir(self, pod: Obj, root: Path) -> Path:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        account = spec.get("serviceAccountName") or "default"
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[],
                expiration_seconds=24 * 3600,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=meta["name"], uid=meta["uid"]
                ),
            )
        )
        try:
            issued = await self._core.create_namespaced_service_account_token(
                account, meta["namespace"], request
            )
        except client.ApiException as exc:
            raise PodSetupError(f'serviceaccount "{account}" cannot get a token: {exc.reason}') from exc
        directory = root / "serviceaccount"
        directory.mkdir()
        (directory / "token").write_text(issued.status.token)
        (directory / "namespace").write_text(meta["namespace"])
        ca = self._api.configuration.ssl_ca_cert
        if ca:
            shutil.copy(ca, directory / "ca.crt")
        return directory


def _write_files(directory: Path, data: dict[str, str], items: list[Obj] | None) -> None:
    chosen = {i["key"]: i.get("path", i["key"]) for i in items} if items else {k: k for k in data}
    for key, path in chosen.items():
        if key in data:
            target = directory / str(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[key])


def _expand(value: str, env: dict[str, str]) -> str:
    """``$(VAR)`` references to earlier variables, as the kubelet expands them."""
    for name, other in env.items():
        value = value.replace(f"$({name})", other)
    return value


def _readiness(container: Obj) -> tuple[str, int | None]:
    probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
    port = probe.get("port")
    if isinstance(port, str):
        port = next((p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port), None)
    return str(probe.get("path", "/healthz")), int(port) if port else None
