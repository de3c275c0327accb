"""A tiny Kubernetes client for the applier: apply, get, delete — whole objects as dicts.

Every write is a server-side apply with field manager ``ferry`` (never read-modify-write); custom
resources go through the custom-objects API, Pods/Services/ControllerRevisions through the typed
core and apps APIs. Every call is a child span of the current reconcile span. There is no LIST:
reads come from the bus-fed view. Each write is noted in :data:`WRITES` (when a reconcile set it),
so the next reconcile of the same owner can wait until the view has seen it.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ferry_schemas.runtime.kube import environment_read_once
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from opentelemetry import trace

from ferry_applier.kinds import KindInfo, kind_info, kind_of

FIELD_MANAGER = "ferry"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"

tracer = trace.get_tracer("ferry_applier.kube")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Written:
    """One write of a reconcile: the object's resource, namespace and name, and what the view must
    show once it caught up — at least ``resource_version``, or (``deleted_uid``) not that uid."""

    resource: str
    namespace: str
    name: str
    resource_version: int = 0
    deleted_uid: str = ""


WRITES: ContextVar[list[Written] | None] = ContextVar("ferry_applier_writes", default=None)


def _note(written: Written) -> None:
    writes = WRITES.get()
    if writes is not None:
        writes.append(written)


def _revision(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


async def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient from ``kubeconfig`` / ``$KUBECONFIG``, or the in-cluster service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if path:
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(client_configuration=configuration)
    return environment_read_once(client.ApiClient(configuration))


class KubeClient:
    """Whole-object operations on namespaced kinds, returning plain camelCase dicts."""

    def __init__(self, api: client.ApiClient, *, field_manager: str = FIELD_MANAGER, timeout: float = 30.0):
        self.api = api
        self.field_manager = field_manager
        self.timeout = timeout
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)

    def _dict(self, value: Any) -> Obj:
        if isinstance(value, dict):
            return value
        if isinstance(value, str | bytes):  # custom objects answer JSON text for some content types
            parsed = json.loads(value)
        else:
            parsed = self.api.sanitize_for_serialization(value)
        if not isinstance(parsed, dict):
            raise TypeError(f"the API server answered {type(value).__name__}, not an object")
        return parsed

    async def apply(self, obj: Obj, *, field_manager: str | None = None) -> Obj:
        """Server-side apply ``obj`` (forced: ferry owns these fields) and return the stored object."""
        info = kind_of(obj)
        meta = obj["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        manager = field_manager or self.field_manager
        opts: dict[str, Any] = {
            "field_manager": manager,
            "force": True,
            "_content_type": APPLY_CONTENT_TYPE,
            "_request_timeout": self.timeout,
        }
        with tracer.start_as_current_span(
            f"k8s apply {info.kind}",
            kind=trace.SpanKind.CLIENT,
            attributes={"k8s.kind": info.kind, "k8s.namespace": namespace, "k8s.name": name},
        ):
            if info.is_custom:
                # read the body ourselves: the generated client decodes only 200, so a creating
                # apply (201) would answer None and cost a GET to read the object back
                response = await self._custom.patch_namespaced_custom_object(
                    info.group,
                    info.version,
                    namespace,
                    info.plural,
                    name,
                    obj,
                    _preload_content=False,
                    **opts,
                )
                body = await response.read()
                response.release()
                if not 200 <= response.status <= 299:
                    error = ApiException(status=response.status, reason=response.reason)
                    error.body = body
                    raise error
                result = json.loads(body)
            elif info.kind == "Pod":
                result = await self._core.patch_namespaced_pod(name, namespace, obj, **opts)
            elif info.kind == "Service":
                result = await self._core.patch_namespaced_service(name, namespace, obj, **opts)
            elif info.kind == "ControllerRevision":
                result = await self._apps.patch_namespaced_controller_revision(name, namespace, obj, **opts)
            else:  # pragma: no cover - the kinds table and this switch move together
                raise NotImplementedError(info.kind)
            stored = self._dict(result)
            _note(Written(info.plural, namespace, name, resource_version=_revision(stored)))
            return stored

    async def create_pod(self, obj: Obj) -> Obj | None:
        """POST a pod; None when one of that name exists already.

        Pods are created, never applied: server-side apply refuses templates the API server
        itself accepts (two ``hostAliases`` with one IP: "duplicate entries for key [ip=…]"), and a
        pod's spec cannot change after creation anyway; Ferry replaces pods by revision instead.
        """
        meta = obj["metadata"]
        with tracer.start_as_current_span(
            "k8s create Pod",
            kind=trace.SpanKind.CLIENT,
            attributes={"k8s.kind": "Pod", "k8s.namespace": meta["namespace"], "k8s.name": meta["name"]},
        ):
            try:
                created = await self._core.create_namespaced_pod(
                    meta["namespace"],
                    obj,  # type: ignore[arg-type]  # a plain dict is sent as it is
                    field_manager=self.field_manager,
                    _request_timeout=self.timeout,
                )
            except ApiException as exc:
                if exc.status == 409:
                    return None
                raise
            stored = self._dict(created)
            _note(Written("pods", meta["namespace"], meta["name"], resource_version=_revision(stored)))
            return stored

    async def served(self, kind: str | KindInfo, namespace: str) -> bool:
        """Whether the API server serves ``kind`` at all (a custom resource's CRD is installed)."""
        info = kind if isinstance(kind, KindInfo) else kind_info(kind)
        if not info.is_custom:
            return True
        try:
            await self._custom.list_namespaced_custom_object(
                info.group, info.version, namespace, info.plural, limit=1, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def get(self, kind: str | KindInfo, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        info = kind if isinstance(kind, KindInfo) else kind_info(kind)
        with tracer.start_as_current_span(
            f"k8s get {info.kind}",
            kind=trace.SpanKind.CLIENT,
            attributes={"k8s.kind": info.kind, "k8s.namespace": namespace, "k8s.name": name},
        ):
            try:
                if info.is_custom:
                    raw = await self._custom.get_namespaced_custom_object(
                        info.group, info.version, namespace, info.plural, name, _request_timeout=self.timeout
                    )
                elif info.kind == "Pod":
                    raw = await self._core.read_namespaced_pod(name, namespace, _request_timeout=self.timeout)
                elif info.kind == "Service":
                    raw = await self._core.read_namespaced_service(
                        name, namespace, _request_timeout=self.timeout
                    )
                elif info.kind == "ControllerRevision":
                    raw = await self._apps.read_namespaced_controller_revision(
                        name, namespace, _request_timeout=self.timeout
                    )
                else:  # pragma: no cover
                    raise NotImplementedError(info.kind)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            obj = self._dict(raw)
            obj.setdefault("apiVersion", info.api_version)
            obj.setdefault("kind", info.kind)
            return obj

    async def delete(
        self, kind: str | KindInfo, namespace: str, name: str, *, uid: str | None = None
    ) -> bool:
        """Delete one object (background propagation); ``uid`` makes it a precondition.

        Returns False when it was already gone or the uid no longer matches (409).
        """
        info = kind if isinstance(kind, KindInfo) else kind_info(kind)
        body = client.V1DeleteOptions(
            propagation_policy="Background",
            preconditions=client.V1Preconditions(uid=uid) if uid else None,
        )
        with tracer.start_as_current_span(
            f"k8s delete {info.kind}",
            kind=trace.SpanKind.CLIENT,
            attributes={"k8s.kind": info.kind, "k8s.namespace": namespace, "k8s.name": name},
        ):
            try:
                if info.is_custom:
                    await self._custom.delete_namespaced_custom_object(
                        info.group,
                        info.version,
                        namespace,
                        info.plural,
                        name,
                        body=body,
                        _request_timeout=self.timeout,
                    )
                elif info.kind == "Pod":
                    await self._core.delete_namespaced_pod(
                        name, namespace, body=body, _request_timeout=self.timeout
                    )
                elif info.kind == "Service":
                    await self._core.delete_namespaced_service(
                        name, namespace, body=body, _request_timeout=self.timeout
                    )
                elif info.kind == "ControllerRevision":
                    await self._apps.delete_namespaced_controller_revision(
                        name, namespace, body=body, _request_timeout=self.timeout
                    )
                else:  # pragma: no cover
                    raise NotImplementedError(info.kind)
            except ApiException as exc:
                if exc.status in (404, 409):
                    return False
                raise
            if uid:
                _note(Written(info.plural, namespace, name, deleted_uid=uid))
            return True


def format_selector(labels: dict[str, str]) -> str:
    """``{"a": "1", "b": "2"}`` → ``a=1,b=2`` (sorted, so the same selector gives the same string)."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
