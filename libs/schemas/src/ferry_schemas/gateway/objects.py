"""Gateway API and Inference Extension objects, compiled from the whole objects on the bus.

The API server has already validated them against the upstream CRDs (standard channel of
``sigs.k8s.io/gateway-api``, ``inference.networking.k8s.io/v1`` InferencePool), so parsing only
applies the API's defaults and keeps what routing and status need, in small frozen records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ferry_schemas.labels import GATEWAY_GROUP, INFERENCE_GROUP

JSON = dict[str, Any]
CORE_GROUP = ""


def _meta(obj: JSON) -> JSON:
    meta: JSON = obj.get("metadata") or {}
    return meta


def _namespace(obj: JSON) -> str:
    return str(_meta(obj).get("namespace") or "")


def _name(obj: JSON) -> str:
    return str(_meta(obj)["name"])


def _created(obj: JSON) -> str:
    return str(_meta(obj).get("creationTimestamp") or "9999")


def _generation(obj: JSON) -> int:
    return int(_meta(obj).get("generation") or 0)


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """Identity shared by every compiled object: ``key`` is ``ns/name`` (``name`` if cluster-scoped)."""

    namespace: str
    name: str
    generation: int
    created: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def age_key(self) -> tuple[str, str, str]:
        """Oldest first, ties by namespace then name (Gateway API's conflict resolution order)."""
        return (self.created, self.namespace, self.name)


def _ref(obj: JSON) -> ObjectRef:
    return ObjectRef(_namespace(obj), _name(obj), _generation(obj), _created(obj))


# --------------------------------------------------------------------------- GatewayClass, Gateway


@dataclass(frozen=True, slots=True)
class GatewayClass:
    ref: ObjectRef
    controller_name: str


def parse_gateway_class(obj: JSON) -> GatewayClass:
    return GatewayClass(
        ref=_ref(obj), controller_name=str((obj.get("spec") or {}).get("controllerName") or "")
    )


@dataclass(frozen=True, slots=True)
class RouteGroupKind:
    group: str
    kind: str


HTTP_ROUTE_KIND = RouteGroupKind(GATEWAY_GROUP, "HTTPRoute")


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    port: int
    protocol: str
    hostname: str | None
    namespaces_from: str  # Same | All | Selector
    namespace_selector: JSON | None
    kinds: tuple[RouteGroupKind, ...]  # empty = the protocol's default (HTTPRoute for HTTP)
    has_tls: bool


@dataclass(frozen=True, slots=True)
class Gateway:
    ref: ObjectRef
    class_name: str
    listeners: tuple[Listener, ...]
    addresses: tuple[JSON, ...]


def _listener(raw: JSON) -> Listener:
    allowed = raw.get("allowedRoutes") or {}
    namespaces = allowed.get("namespaces") or {}
    kinds = tuple(
        RouteGroupKind(str(k.get("group", GATEWAY_GROUP)), str(k.get("kind", "")))
        for k in allowed.get("kinds") or []
    )
    return Listener(
        name=str(raw["name"]),
        port=int(raw["port"]),
        protocol=str(raw.get("protocol") or "HTTP"),
        hostname=(str(raw["hostname"]).lower() if raw.get("hostname") else None),
        namespaces_from=str(namespaces.get("from") or "Same"),
        namespace_selector=namespaces.get("selector"),
        kinds=kinds,
        has_tls=bool(raw.get("tls")),
    )


def parse_gateway(obj: JSON) -> Gateway:
    spec = obj.get("spec") or {}
    return Gateway(
        ref=_ref(obj),
        class_name=str(spec.get("gatewayClassName") or ""),
        listeners=tuple(_listener(raw) for raw in spec.get("listeners") or []),
        addresses=tuple(spec.get("addresses") or ()),
    )


# --------------------------------------------------------------------------- parent references


@dataclass(frozen=True, slots=True)
class ParentRef:
    """A ``ParentReference`` with defaults applied (namespace = the route's)."""

    group: str
    kind: str
    namespace: str
    name: str
    section_name: str | None
    port: int | None

    @property
    def is_gateway(self) -> bool:
        return self.group == GATEWAY_GROUP and self.kind == "Gateway"

    @property
    def gateway_key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def wire(self) -> JSON:
        """The reference as written back in ``status.parents[].parentRef``."""
        out: JSON = {"group": self.group, "kind": self.kind, "namespace": self.namespace, "name": self.name}
        if self.section_name is not None:
            out["sectionName"] = self.section_name
        if self.port is not None:
            out["port"] = self.port
        return out


def parse_parent_refs(raw: list[JSON] | None, route_namespace: str) -> tuple[ParentRef, ...]:
    return tuple(
        ParentRef(
            group=str(p.get("group") if p.get("group") is not None else GATEWAY_GROUP) or GATEWAY_GROUP,
            kind=str(p.get("kind") or "Gateway"),
            namespace=str(p.get("namespace") or route_namespace),
            name=str(p["name"]),
            section_name=p.get("sectionName") or None,
            port=int(p["port"]) if p.get("port") is not None else None,
        )
        for p in raw or []
    )


# --------------------------------------------------------------------------- HTTPRoute


@dataclass(frozen=True, slots=True)
class BackendRef:
    group: str
    kind: str
    namespace: str
    name: str
    port: int | None
    weight: int
    filters: tuple[JSON, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def is_pool(self) -> bool:
        return self.group == INFERENCE_GROUP and self.kind == "InferencePool"

    @property
    def is_service(self) -> bool:
        return self.group == CORE_GROUP and self.kind == "Service"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    path_type: str  # Exact | PathPrefix | RegularExpression
    path: str
    headers: tuple[tuple[str, str, str], ...]  # (type, lower-cased name, value)
    query: tuple[tuple[str, str, str], ...]  # (type, name, value)
    method: str | None


DEFAULT_MATCH = RouteMatch("PathPrefix", "/", (), (), None)


@dataclass(frozen=True, slots=True)
class RouteRule:
    index: int
    name: str | None
    matches: tuple[RouteMatch, ...]
    filters: tuple[JSON, ...]
    backends: tuple[BackendRef, ...]
    request_timeout: str | None


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    ref: ObjectRef
    parents: tuple[ParentRef, ...]
    hostnames: tuple[str, ...]
    rules: tuple[RouteRule, ...]


def _match(raw: JSON) -> RouteMatch:
    path = raw.get("path") or {}
    return RouteMatch(
        path_type=str(path.get("type") or "PathPrefix"),
        path=str(path.get("value") or "/"),
        headers=tuple(
            (str(h.get("type") or "Exact"), str(h["name"]).lower(), str(h.get("value", "")))
            for h in raw.get("headers") or []
        ),
        query=tuple(
            (str(q.get("type") or "Exact"), str(q["name"]), str(q.get("value", "")))
            for q in raw.get("queryParams") or []
        ),
        method=raw.get("method") or None,
    )


def _backend(raw: JSON, route_namespace: str) -> BackendRef:
    group = str(raw.get("group") or CORE_GROUP)
    return BackendRef(
        group=group,
        kind=str(raw.get("kind") or "Service"),
        namespace=str(raw.get("namespace") or route_namespace),
        name=str(raw["name"]),
        port=int(raw["port"]) if raw.get("port") is not None else None,
        weight=int(raw["weight"]) if raw.get("weight") is not None else 1,
        filters=tuple(raw.get("filters") or ()),
    )


def parse_http_route(obj: JSON) -> HTTPRoute:
    spec = obj.get("spec") or {}
    namespace = _namespace(obj)
    rules = []
    for index, raw in enumerate(spec.get("rules") or [{}]):
        matches = tuple(_match(m) for m in raw.get("matches") or []) or (DEFAULT_MATCH,)
        timeouts = raw.get("timeouts") or {}
        rules.append(
            RouteRule(
                index=index,
                name=raw.get("name"),
                matches=matches,
                filters=tuple(raw.get("filters") or ()),
                backends=tuple(_backend(b, namespace) for b in raw.get("backendRefs") or []),
                request_timeout=timeouts.get("request"),
            )
        )
    return HTTPRoute(
        ref=_ref(obj),
        parents=parse_parent_refs(spec.get("parentRefs"), namespace),
        hostnames=tuple(str(h).lower() for h in spec.get("hostnames") or ()),
        rules=tuple(rules),
    )


# --------------------------------------------------------------------------- InferencePool, ReferenceGrant


@dataclass(frozen=True, slots=True)
class InferencePool:
    ref: ObjectRef
    match_labels: tuple[tuple[str, str], ...]  # spec.selector.matchLabels, sorted (the pods it pools)
    target_ports: tuple[int, ...]
    app_protocol: str


def parse_inference_pool(obj: JSON) -> InferencePool:
    spec = obj.get("spec") or {}
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    return InferencePool(
        ref=_ref(obj),
        match_labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        target_ports=tuple(int(p["number"]) for p in spec.get("targetPorts") or []),
        app_protocol=str(spec.get("appProtocol") or "http"),
    )


@dataclass(frozen=True, slots=True)
class ReferenceGrant:
    ref: ObjectRef
    sources: tuple[tuple[str, str, str], ...]  # (group, kind, namespace)
    targets: tuple[tuple[str, str, str | None], ...] = field(default=())  # (group, kind, name)

    def permits(
        self, group: str, kind: str, namespace: str, to_group: str, to_kind: str, to_name: str
    ) -> bool:
        source_ok = (group, kind, namespace) in self.sources
        return source_ok and any(
            g == to_group and k == to_kind and (n is None or n == to_name) for g, k, n in self.targets
        )


def parse_reference_grant(obj: JSON) -> ReferenceGrant:
    spec = obj.get("spec") or {}
    return ReferenceGrant(
        ref=_ref(obj),
        sources=tuple(
            (str(f.get("group") or ""), str(f.get("kind") or ""), str(f.get("namespace") or ""))
            for f in spec.get("from") or []
        ),
        targets=tuple(
            (str(t.get("group") or ""), str(t.get("kind") or ""), t.get("name") or None)
            for t in spec.get("to") or []
        ),
    )


# --------------------------------------------------------------------------- Service (a backendRef)


@dataclass(frozen=True, slots=True)
class Service:
    """What an HTTPRoute needs of a Service backend: the pods it selects and its port mapping."""

    ref: ObjectRef
    match_labels: tuple[tuple[str, str], ...]  # spec.selector (empty: no selector, nothing routable)
    target_ports: tuple[tuple[int, int], ...]  # (port, numeric targetPort; the port itself if named)

    def target_port(self, port: int) -> int | None:
        return next((target for p, target in self.target_ports if p == port), None)


def parse_service(obj: JSON) -> Service:
    spec = obj.get("spec") or {}
    ports = []
    for raw in spec.get("ports") or []:
        port = int(raw["port"])
        target = raw.get("targetPort")
        ports.append((port, int(target) if isinstance(target, int) or str(target or "").isdigit() else port))
    return Service(
        ref=_ref(obj),
        match_labels=tuple(sorted((str(k), str(v)) for k, v in (spec.get("selector") or {}).items())),
        target_ports=tuple(ports),
    )
