"""The API server as the CLI sees it: kubeconfig (``KUBECONFIG``/``--kubeconfig``) or in-cluster
config, the namespace (``--namespace``, else the context's, else ``default``), and reads of Ferry's
kinds, pods and Events — every failure turned into a :class:`CliError` that says what to do.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from ferry_schemas import labels as L
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from ferry_cli.errors import CliError

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """A Ferry kind as the API serves it."""

    kind: str
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


BOOSTER = Kind("ModelBooster", L.WORKLOAD_GROUP, "v1alpha1", "modelboosters")
SERVING = Kind("ModelServing", L.WORKLOAD_GROUP, "v1alpha1", "modelservings")
POLICY = Kind("AutoscalingPolicy", L.WORKLOAD_GROUP, "v1alpha1", "autoscalingpolicies")
BINDING = Kind("AutoscalingPolicyBinding", L.WORKLOAD_GROUP, "v1alpha1", "autoscalingpolicybindings")
SERVER = Kind("ModelServer", L.NETWORKING_GROUP, "v1alpha1", "modelservers")
ROUTE = Kind("ModelRoute", L.NETWORKING_GROUP, "v1alpha1", "modelroutes")
PODGROUP = Kind("PodGroup", "scheduling.volcano.sh", "v1beta1", "podgroups")
BOOSTER_CHILDREN = (SERVING, SERVER, ROUTE, POLICY, BINDING)


def kubeconfig_path(explicit: str | None) -> str | None:
    """``--kubeconfig``, else the first file of ``KUBECONFIG``, else ``~/.kube/config`` if it exists."""
    if explicit:
        return explicit
    if env := os.environ.get("KUBECONFIG"):
        return env.split(os.pathsep)[0]
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else None


def _exists(path: str) -> bool:
    return Path(path).exists()


def _incluster_namespace() -> str | None:
    ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return ns_file.read_text().strip() if ns_file.exists() else None


async def _load(kubeconfig: str | None) -> tuple[client.Configuration, str | None]:
    """Client configuration and the context's namespace (None in-cluster or when unset)."""
    configuration = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            raise CliError(
                "no cluster to talk to: set KUBECONFIG (or --kubeconfig); on the local stack run "
                '`eval "$(uv run ferry-local env)"`'
            ) from exc
        return configuration, _incluster_namespace()
    if not _exists(kubeconfig):
        raise CliError(f"kubeconfig {kubeconfig} does not exist (check KUBECONFIG or --kubeconfig)")
    try:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except ConfigException as exc:
        raise CliError(f"kubeconfig {kubeconfig} is not usable: {exc}") from exc
    namespace = ((active or {}).get("context") or {}).get("namespace")
    return configuration, namespace


def explain(exc: ApiException, what: str) -> CliError:
    """A clear message for an API error while doing ``what``."""
    reason = exc.reason or ""
    message = ""
    if exc.body:
        try:
            import json

            message = json.loads(exc.body).get("message", "")
        except ValueError:
            message = str(exc.body)[:300]
    if exc.status == 401:
        return CliError(f"{what}: the API server did not accept the credentials (401 {reason})")
    if exc.status == 403:
        return CliError(f"{what}: forbidden — {message or reason}")
    if exc.status == 404 and "the server could not find the requested resource" in (message or reason):
        return CliError(
            f"{what}: Ferry's CRDs are not installed in this cluster "
            "(`helm install ferry deploy/helm/ferry` or `kubectl apply -k deploy/`)"
        )
    return CliError(f"{what}: {exc.status} {message or reason}")


class Kube:
    """Async reads (and creates) against one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str, server: str) -> None:
        self.api = api
        self.namespace = namespace
        self.server = server
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except ApiException as exc:
            raise explain(exc, what) from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise CliError(f"{what}: cannot reach the API server at {self.server} ({exc})") from exc

    async def objects(self, kind: Kind, selector: str | None = None) -> list[Obj]:
        result = await self._call(
            f"listing {kind.plural} in namespace {self.namespace}",
            self.custom.list_namespaced_custom_object(
                kind.group, kind.version, self.namespace, kind.plural, label_selector=selector or ""
            ),
        )
        items: list[Obj] = result.get("items") or []
        return sorted(items, key=lambda o: o["metadata"]["name"])

    async def objects_if_installed(self, kind: Kind, selector: str | None = None) -> list[Obj]:
        """Like :meth:`objects`, but a kind whose CRD is absent (PodGroup without Volcano) is empty."""
        try:
            return await self.objects(kind, selector)
        except CliError as exc:
            if "CRDs are not installed" in str(exc):
                return []
            raise

    async def get(self, kind: Kind, name: str) -> Obj:
        try:
            obj: Obj = await self.custom.get_namespaced_custom_object(
                kind.group, kind.version, self.namespace, kind.plural, name
            )
            return obj
        except ApiException as exc:
            if exc.status == 404 and "could not find the requested resource" not in (exc.body or ""):
                raise CliError(
                    f'{kind.kind} "{name}" not found in namespace {self.namespace} '
                    f"(`ferry get {_noun(kind)} -n {self.namespace}` lists them)"
                ) from exc
            raise explain(exc, f"reading {kind.kind} {name}") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise CliError(f"cannot reach the API server at {self.server} ({exc})") from exc

    async def create(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        group, version = obj["apiVersion"].split("/")
        plural = next(k.plural for k in (BOOSTER, *BOOSTER_CHILDREN) if k.kind == obj["kind"])
        options: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        try:
            created: Obj = await self.custom.create_namespaced_custom_object(
                group, version, self.namespace, plural, obj, **options
            )
            return created
        except ApiException as exc:
            name = obj["metadata"]["name"]
            if exc.status == 409:
                raise CliError(
                    f'{obj["kind"]} "{name}" already exists in namespace {self.namespace}'
                ) from exc
            raise explain(exc, f"creating {obj['kind']} {name}") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise CliError(f"cannot reach the API server at {self.server} ({exc})") from exc

    async def pods(self, selector: str) -> list[Obj]:
        result = await self._call(
            f"listing pods in namespace {self.namespace}",
            self.core.list_namespaced_pod(self.namespace, label_selector=selector, _preload_content=False),
        )
        items: list[Obj] = (await result.json()).get("items") or []
        return sorted(items, key=lambda o: o["metadata"]["name"])

    async def events(self) -> list[Obj]:
        result = await self._call(
            f"listing events in namespace {self.namespace}",
            self.core.list_namespaced_event(self.namespace, _preload_content=False),
        )
        items: list[Obj] = (await result.json()).get("items") or []
        return items


def _noun(kind: Kind) -> str:
    return {"ModelBooster": "models", "ModelServing": "servings", "ModelRoute": "routes"}.get(
        kind.kind, kind.plural
    )


@asynccontextmanager
async def connect(kubeconfig: str | None, namespace: str | None) -> AsyncIterator[Kube]:
    """A :class:`Kube` for ``namespace`` (else the context's, else ``default``)."""
    configuration, context_namespace = await _load(kubeconfig_path(kubeconfig))
    async with client.ApiClient(configuration) as api:
        yield Kube(api, namespace or context_namespace or "default", configuration.host or "?")
