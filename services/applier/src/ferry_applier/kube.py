"""A tiny Kubernetes client for the applier: apply, get, delete — whole objects as dicts.

Every write is a server-side apply with field manager ``ferry`` (never read-modify-write) or, for an
object that does not exist yet, a POST by the same manager; custom and core kinds alike as raw REST
over the lean :class:`~ferry_schemas.runtime.kubeconn.KubeConnection` (no generated client). Every
call is a child span of the current reconcile span. There is no LIST: reads come from the bus-fed
view. Each write is noted in :data:`WRITES` (when a reconcile set it), so the next reconcile of the
same owner can wait until the view has seen it.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ferry_schemas.runtime import kubeconn
from ferry_schemas.runtime.kubeconn import ApiError, KubeConnection, object_path
from opentelemetry import trace

from ferry_applier.errors import TransientError
from ferry_applier.kinds import KindInfo, kind_info, kind_of
from ferry_applier.ownership import folded, posted_entries

FIELD_MANAGER = "ferry"

tracer = trace.get_tracer("ferry_applier.kube")

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
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


async def load_api_client(kubeconfig: str | None = None) -> KubeConnection:
    """A connection from ``kubeconfig`` / ``$KUBECONFIG``, or the in-cluster service account."""
    return await kubeconn.connect(kubeconfig, pool_size=kubeconn.REQUEST_POOL_SIZE)


def _path(info: KindInfo, namespace: str, name: str = "") -> str:
    return object_path(info.group, info.version, info.plural, namespace, name)


class KubeClient:
    """Whole-object operations on namespaced kinds, returning plain camelCase dicts."""

    def __init__(self, api: KubeConnection, *, field_manager: str = FIELD_MANAGER, timeout: float = 30.0):
        self.api = api
        self.field_manager = field_manager
        self.timeout = timeout

    async def apply(self, obj: Obj, *, field_manager: str | None = None, whole: bool = False) -> Obj:
        """Server-side apply ``obj`` (forced: ferry owns these fields); the stored object's metadata
        (a ``PartialObjectMetadata``: resourceVersion, uid, managedFields), or (``whole``) all of it.

        The API server encodes only what is asked for: a ModelServing's answer is 2 KB instead of 7.
        """
        info = kind_of(obj)
        meta = obj["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        with tracer.start_as_current_span(
            f"k8s apply {info.kind}",
            kind=trace.SpanKind.CLIENT,
            attributes={"k8s.kind": info.kind, "k8s.namespace": namespace, "k8s.name": name},
        ):
            path = _path(info, namespace, name)
            manager = field_manager or self.field_manager
            accept = kubeconn.APPLICATION_JSON if whole else kubeconn.METADATA_ONLY
            stored = await self.api.apply(path, obj, manager, limits=self.timeout, accept=accept)
            if posted_entries(stored, manager):
                stored = await self._own_by_apply(path, obj, manager, stored, accept)
            _note(Written(info.plural, namespace, name, resource_version=_revision(stored)))
            return stored

    async def _own_by_apply(self, path: str, obj: Obj, manager: str, stored: Obj, accept: str) -> Obj:
        """Fold the POST's ``Update`` entry into the ``Apply`` one, then apply again, so that what this
        apply no longer sends is pruned (:mod:`ferry_applier.ownership`). An object changed meanwhile
        is a transient error: the retried reconcile applies, and folds, again."""
        meta = stored.get("metadata") or {}
        entries = folded(meta.get("managedFields") or [], manager)
        patch: list[Obj] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
            {"op": "replace", "path": "/metadata/managedFields", "value": entries},
        ]
        try:
            await self.api.send(
                "PATCH", path, patch, content_type=kubeconn.JSON_PATCH, limits=self.timeout,
                accept=kubeconn.METADATA_ONLY,
            )  # fmt: skip
        except ApiError as exc:
            if exc.status not in (409, 422):
                raise
            raise TransientError(f"{path} changed while its fields were handed to apply") from exc
        return await self.api.apply(path, obj, manager, limits=self.timeout, accept=accept)

    async def create_or_apply(self, obj: Obj) -> Obj:
        """A child the view does not show yet: POSTed (no YAML parse and no merge for the API server;
        its first later apply hands its fields to server-side apply, :mod:`ferry_applier.ownership`),
        or applied when it exists after all."""
        stored = await self.create(obj)
        return stored if stored is not None else await self.apply(obj)

    async def create(self, obj: Obj, *, field_manager: str | None = None) -> Obj | None:
        """POST an object; the stored object's metadata, or None when one of that name exists already.

        Pods and template snapshots (ControllerRevisions) are created, never applied. A pod's spec
        cannot change after creation (Ferry replaces pods by revision), and server-side apply refuses
        templates the API server itself accepts (two ``hostAliases`` with one IP: "duplicate entries
        for key [ip=…]"). A snapshot's ``data`` is immutable. Other children are POSTed only while
        they do not exist (:meth:`create_or_apply`). A POST costs the API server no YAML parse and no
        merge.
        """
        info = kind_of(obj)
        meta = obj["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        with tracer.start_as_current_span(
            f"k8s create {info.kind}",
            kind=trace.SpanKind.CLIENT,
            attributes={"k8s.kind": info.kind, "k8s.namespace": namespace, "k8s.name": name},
        ):
            try:
                stored = await self.api.send(
                    "POST",
                    _path(info, namespace),
                    obj,
                    query=[("fieldManager", field_manager or self.field_manager)],
                    limits=self.timeout,
                    accept=kubeconn.METADATA_ONLY,
                )
            except ApiError as exc:
                if exc.status == 409:
                    return None
                raise
            _note(Written(info.plural, namespace, name, resource_version=_revision(stored)))
            return stored

    async def served(self, kind: str | KindInfo, namespace: str) -> bool:
        """Whether the API server serves ``kind`` at all (a custom resource's CRD is installed)."""
        info = kind if isinstance(kind, KindInfo) else kind_info(kind)
        if not info.is_custom:
            return True
        try:
            await self.api.send("GET", _path(info, namespace), query=[("limit", "1")], limits=self.timeout)
        except ApiError as exc:
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
                obj = await self.api.send("GET", _path(info, namespace, name), limits=self.timeout)
            except ApiError as exc:
                if exc.status == 404:
                    return None
                raise
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
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        with tracer.start_as_current_span(
            f"k8s delete {info.kind}",
            kind=trace.SpanKind.CLIENT,
            attributes={"k8s.kind": info.kind, "k8s.namespace": namespace, "k8s.name": name},
        ):
            try:
                await self.api.send("DELETE", _path(info, namespace, name), body, limits=self.timeout)
            except ApiError as exc:
                if exc.status in (404, 409):
                    return False
                raise
            if uid:
                _note(Written(info.plural, namespace, name, deleted_uid=uid))
            return True


def format_selector(labels: dict[str, str]) -> str:
    """``{"a": "1", "b": "2"}`` → ``a=1,b=2`` (sorted, so the same selector gives the same string)."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
