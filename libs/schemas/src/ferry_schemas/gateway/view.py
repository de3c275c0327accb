"""Which Gateways Ferry owns and what attaches to them: the one computation the router (to route)
and the status service (to write conditions) share.

:class:`GatewayWorld` is fed whole objects (level-triggered, like the routing table) and
:meth:`GatewayWorld.resolve` computes, from nothing but those objects:

* the GatewayClasses whose ``controllerName`` is Ferry's, and the Gateways of those classes;
* per listener: accepted or not (only ``HTTP`` is served), conflicts on a shared port (oldest
  Gateway, then listener order, keeps a hostname), the route kinds it supports;
* per HTTPRoute (and ModelRoute) parentRef: attached to which listeners, or why not (the Gateway
  API reasons ``NoMatchingParent``, ``NotAllowedByListeners``, ``NoMatchingListenerHostname``);
* per HTTPRoute: whether every backendRef resolves (``BackendNotFound``, ``InvalidKind``,
  ``RefNotPermitted``) and which filters Ferry does not support;
* per InferencePool: the Gateways that reach it through an accepted HTTPRoute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ferry_schemas.bus import Resource
from ferry_schemas.gateway.objects import (
    HTTP_ROUTE_KIND,
    BackendRef,
    Gateway,
    GatewayClass,
    HTTPRoute,
    InferencePool,
    Listener,
    ParentRef,
    ReferenceGrant,
    RouteGroupKind,
    Service,
    parse_gateway,
    parse_gateway_class,
    parse_http_route,
    parse_inference_pool,
    parse_reference_grant,
    parse_service,
)
from ferry_schemas.labels import GATEWAY_GROUP

JSON = dict[str, Any]
GATEWAY_RESOURCES = (
    Resource.GATEWAY_CLASSES,
    Resource.GATEWAYS,
    Resource.HTTP_ROUTES,
    Resource.REFERENCE_GRANTS,
    Resource.INFERENCE_POOLS,
    Resource.SERVICES,
)
"""What a :class:`GatewayWorld` is fed (router and status service subscribe to exactly these)."""
SUPPORTED_PROTOCOLS = frozenset({"HTTP"})
SUPPORTED_FILTERS = frozenset(
    {"RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"}
)
"""Core and extended HTTPRoute filters Ferry applies; ``RequestMirror``, ``CORS`` and ``ExtensionRef``
make the route ``Accepted=False`` (``UnsupportedValue``) instead of being skipped silently."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A condition outcome: ``ok`` with the Gateway API ``reason`` and a human ``message``."""

    ok: bool
    reason: str
    message: str


@dataclass(slots=True)
class ListenerState:
    gateway: str  # ns/name
    listener: Listener
    accepted: Verdict
    resolved_refs: Verdict
    conflicted: Verdict | None  # None = not conflicted
    supported_kinds: tuple[RouteGroupKind, ...]
    attached_routes: int = 0

    @property
    def serving(self) -> bool:
        """Whether the router should serve this listener (accepted, refs resolved, no conflict)."""
        return self.accepted.ok and self.resolved_refs.ok and self.conflicted is None

    def host_matches(self, host: str) -> bool:
        return hostname_matches(self.listener.hostname, host)


@dataclass(slots=True)
class GatewayState:
    gateway: Gateway
    accepted: Verdict
    listeners: list[ListenerState] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.gateway.ref.key


@dataclass(frozen=True, slots=True)
class ParentState:
    """One parentRef of a route, resolved against the Gateways Ferry owns."""

    parent: ParentRef
    accepted: Verdict
    listeners: tuple[ListenerState, ...]  # the listeners the route attached to (empty unless accepted)


@dataclass(slots=True)
class RouteState:
    route: HTTPRoute
    parents: list[ParentState]
    resolved_refs: Verdict
    unsupported: Verdict | None  # an unsupported filter makes every parent Accepted=False


@dataclass(slots=True)
class Resolution:
    classes: dict[str, Verdict]  # owned GatewayClass name -> Accepted
    gateways: dict[str, GatewayState]  # owned Gateway key -> state
    routes: dict[str, RouteState]  # HTTPRoute key -> state (only routes with an owned parent)
    pools: dict[str, InferencePool]
    pool_parents: dict[str, list[str]]  # pool key -> gateway keys reaching it
    listeners_by_port: dict[int, list[ListenerState]]  # serving listeners, most specific host first

    def listener(self, gateway: str, name: str) -> ListenerState | None:
        state = self.gateways.get(gateway)
        return next((x for x in state.listeners if x.listener.name == name), None) if state else None


def hostname_matches(pattern: str | None, host: str) -> bool:
    """Gateway API hostname matching: exact, or ``*.suffix`` matching one or more labels before it."""
    if pattern is None:
        return True
    host = host.lower()
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix)
    return host == pattern


def intersect_hostnames(listener: str | None, route: tuple[str, ...]) -> tuple[str, ...] | None:
    """The hostnames a route serves on a listener; ``()`` means any host, ``None`` means none match."""
    if not route:
        return (listener,) if listener else ()
    if listener is None:
        return route
    out = []
    for name in route:
        if hostname_matches(listener, name):
            out.append(name)
        elif name.startswith("*.") and hostname_matches(name, listener.lstrip("*.")):
            out.append(listener)
        elif name == listener:
            out.append(name)
    return tuple(dict.fromkeys(out)) or None


def _host_specificity(listener: Listener) -> tuple[int, int]:
    """Exact hostnames first, then longer wildcards, then listeners without a hostname."""
    name = listener.hostname
    if name is None:
        return (2, 0)
    if name.startswith("*."):
        return (1, -len(name))
    return (0, -len(name))


class GatewayWorld:
    """The Gateway API objects on the bus, and what Ferry (``controller_name``) makes of them."""

    def __init__(self, controller_name: str) -> None:
        self.controller_name = controller_name
        self.classes: dict[str, GatewayClass] = {}
        self.gateways: dict[str, Gateway] = {}
        self.http_routes: dict[str, HTTPRoute] = {}
        self.pools: dict[str, InferencePool] = {}
        self.grants: dict[str, ReferenceGrant] = {}
        self.services: dict[str, Service] = {}
        self.invalid: dict[str, str] = {}
        self._resolution: Resolution | None = None
        self.listeners: list[Callable[[], None]] = []
        """Called after every change (the router re-plans its listeners)."""

    # ------------------------------------------------------------------ feeding

    def apply(self, resource: str, key: str, obj: JSON | None) -> None:
        """Add, replace or (``obj`` None) remove one object of a Gateway API resource."""
        parsers: dict[str, tuple[dict[str, Any], Callable[[JSON], Any]]] = {
            Resource.GATEWAY_CLASSES: (self.classes, parse_gateway_class),
            Resource.GATEWAYS: (self.gateways, parse_gateway),
            Resource.HTTP_ROUTES: (self.http_routes, parse_http_route),
            Resource.INFERENCE_POOLS: (self.pools, parse_inference_pool),
            Resource.REFERENCE_GRANTS: (self.grants, parse_reference_grant),
            Resource.SERVICES: (self.services, parse_service),
        }
        store, parse = parsers[resource]
        key = key.lstrip("/")  # cluster-scoped objects arrive as "/name"
        self.invalid.pop(f"{resource}/{key}", None)
        store.pop(key, None)
        if obj is not None:
            try:
                store[key] = parse(obj)
            except (KeyError, TypeError, ValueError) as exc:
                self.invalid[f"{resource}/{key}"] = str(exc)
        self._resolution = None
        for listener in self.listeners:
            listener()

    def resolve(self) -> Resolution:
        if self._resolution is None:
            self._resolution = self._compute()
        return self._resolution

    # ------------------------------------------------------------------ computation

    def _compute(self) -> Resolution:
        classes = {
            name: Verdict(True, "Accepted", f"handled by {self.controller_name}")
            for name, c in self.classes.items()
            if c.controller_name == self.controller_name
        }
        gateways: dict[str, GatewayState] = {}
        for gateway in sorted(self.gateways.values(), key=lambda g: g.ref.age_key):
            if gateway.class_name in classes:
                gateways[gateway.ref.key] = self._gateway_state(gateway)
        self._mark_conflicts(gateways)
        routes: dict[str, RouteState] = {}
        for route in sorted(self.http_routes.values(), key=lambda r: r.ref.age_key):
            parents = [
                self._parent_state(p, route.ref.namespace, route.hostnames, gateways) for p in route.parents
            ]
            owned = [p for p in parents if p is not None]
            if not owned:
                continue
            unsupported = self._unsupported(route)
            if unsupported is not None:
                owned = [ParentState(p.parent, unsupported, ()) for p in owned]
            routes[route.ref.key] = RouteState(route, owned, self._resolve_refs(route), unsupported)
            for parent in owned:
                for listener in parent.listeners:
                    listener.attached_routes += 1
        pool_parents: dict[str, list[str]] = {}
        for route_state in routes.values():
            accepted = sorted({p.parent.gateway_key for p in route_state.parents if p.accepted.ok})
            for rule in route_state.route.rules:
                for backend in rule.backends:
                    if backend.is_pool and backend.key in self.pools:
                        known = pool_parents.setdefault(backend.key, [])
                        known.extend(g for g in accepted if g not in known)
        by_port: dict[int, list[ListenerState]] = {}
        for gateway_state in gateways.values():
            for listener in gateway_state.listeners:
                if listener.serving:
                    by_port.setdefault(listener.listener.port, []).append(listener)
        for bucket in by_port.values():
            bucket.sort(key=lambda x: _host_specificity(x.listener))
        return Resolution(classes, gateways, routes, dict(self.pools), pool_parents, by_port)

    def _gateway_state(self, gateway: Gateway) -> GatewayState:
        if gateway.addresses:
            accepted = Verdict(
                False, "UnsupportedAddress", "spec.addresses is not supported: the router's address is used"
            )
        elif not gateway.listeners:
            accepted = Verdict(False, "ListenersNotValid", "the Gateway has no listeners")
        else:
            accepted = Verdict(True, "Accepted", "accepted by Ferry's router")
        state = GatewayState(gateway, accepted)
        for listener in gateway.listeners:
            if listener.protocol not in SUPPORTED_PROTOCOLS:
                ok = Verdict(
                    False, "UnsupportedProtocol", f"protocol {listener.protocol} is not supported (only HTTP)"
                )
            else:
                ok = Verdict(True, "Accepted", "listener accepted")
            bad_kinds = [k for k in listener.kinds if k != HTTP_ROUTE_KIND]
            kinds = (
                tuple(k for k in listener.kinds if k == HTTP_ROUTE_KIND)
                if listener.kinds
                else (HTTP_ROUTE_KIND,)
            )
            if bad_kinds:
                names = ", ".join(f"{k.group}/{k.kind}" for k in bad_kinds)
                refs = Verdict(False, "InvalidRouteKinds", f"route kinds not supported: {names}")
            else:
                refs = Verdict(True, "ResolvedRefs", "all references resolved")
            state.listeners.append(ListenerState(gateway.ref.key, listener, ok, refs, None, kinds))
        return state

    def _mark_conflicts(self, gateways: dict[str, GatewayState]) -> None:
        """Listeners sharing a port must differ in hostname; the oldest Gateway keeps a hostname."""
        taken: dict[tuple[int, str | None], str] = {}
        for state in gateways.values():  # oldest first
            for listener in state.listeners:
                if not listener.accepted.ok:
                    continue
                spot = (listener.listener.port, listener.listener.hostname)
                holder = taken.get(spot)
                if holder is None:
                    taken[spot] = f"{state.key}/{listener.listener.name}"
                    continue
                host = listener.listener.hostname or "(any host)"
                listener.conflicted = Verdict(
                    True,
                    "HostnameConflict",
                    f"port {spot[0]} hostname {host} is already served by listener {holder}",
                )

    def _parent_state(
        self, parent: ParentRef, namespace: str, hostnames: tuple[str, ...], gateways: dict[str, GatewayState]
    ) -> ParentState | None:
        """``None`` when the parent is not a Gateway Ferry owns (another controller reports on it)."""
        if not parent.is_gateway:
            return None
        state = gateways.get(parent.gateway_key)
        if state is None:
            return None
        if not state.accepted.ok:
            return ParentState(
                parent, Verdict(False, "NoMatchingParent", f"Gateway {state.key} is not accepted"), ()
            )
        candidates = [
            x
            for x in state.listeners
            if (parent.section_name is None or x.listener.name == parent.section_name)
            and (parent.port is None or x.listener.port == parent.port)
        ]
        if not candidates:
            where = f"section {parent.section_name!r}" if parent.section_name else f"port {parent.port}"
            return ParentState(
                parent, Verdict(False, "NoMatchingParent", f"Gateway {state.key} has no listener {where}"), ()
            )
        allowed = [x for x in candidates if x.serving and self._allows(x, namespace)]
        if not allowed:
            return ParentState(
                parent,
                Verdict(
                    False,
                    "NotAllowedByListeners",
                    f"no listener of {state.key} accepts HTTPRoutes from namespace {namespace}",
                ),
                (),
            )
        matching = tuple(
            x for x in allowed if intersect_hostnames(x.listener.hostname, hostnames) is not None
        )
        if not matching:
            return ParentState(
                parent,
                Verdict(
                    False,
                    "NoMatchingListenerHostname",
                    f"no listener hostname of {state.key} matches {list(hostnames)}",
                ),
                (),
            )
        return ParentState(parent, Verdict(True, "Accepted", f"attached to {state.key}"), matching)

    @staticmethod
    def _allows(listener: ListenerState, namespace: str) -> bool:
        """allowedRoutes.namespaces: ``Same`` and ``All``; ``Selector`` needs Namespace labels, which
        Ferry does not watch, so it admits nothing (documented as unsupported)."""
        if listener.listener.namespaces_from == "All":
            return True
        if listener.listener.namespaces_from == "Same":
            return namespace == listener.gateway.split("/", 1)[0]
        return False

    def _unsupported(self, route: HTTPRoute) -> Verdict | None:
        for rule in route.rules:
            for raw in (*rule.filters, *(f for b in rule.backends for f in b.filters)):
                kind = str(raw.get("type") or "")
                if kind not in SUPPORTED_FILTERS:
                    return Verdict(
                        False, "UnsupportedValue", f"rule {rule.index}: filter {kind} is not supported"
                    )
        return None

    def _resolve_refs(self, route: HTTPRoute) -> Verdict:
        for rule in route.rules:
            for backend in rule.backends:
                problem = self.backend_problem(route, backend)
                if problem is not None:
                    return problem
        return Verdict(True, "ResolvedRefs", "all backend references resolved")

    def backend_problem(self, route: HTTPRoute, backend: BackendRef) -> Verdict | None:
        """Why a backendRef cannot be used (``None`` when it can)."""
        if not (backend.is_pool or backend.is_service):
            return Verdict(
                False,
                "InvalidKind",
                f"backend kind {backend.group or 'core'}/{backend.kind} is not supported",
            )
        if backend.namespace != route.ref.namespace and not self._granted(route, backend):
            return Verdict(
                False,
                "RefNotPermitted",
                f"no ReferenceGrant in {backend.namespace} lets HTTPRoutes from "
                f"{route.ref.namespace} use {backend.kind} {backend.name}",
            )
        if backend.is_pool and backend.key not in self.pools:
            return Verdict(False, "BackendNotFound", f"InferencePool {backend.key} not found")
        if backend.is_service:
            service = self.services.get(backend.key)
            if service is None:
                return Verdict(False, "BackendNotFound", f"Service {backend.key} not found")
            if backend.port is None or service.target_port(backend.port) is None:
                return Verdict(False, "BackendNotFound", f"Service {backend.key} has no port {backend.port}")
            if not service.match_labels:
                return Verdict(False, "UnsupportedValue", f"Service {backend.key} has no selector")
        return None

    def _granted(self, route: HTTPRoute, backend: BackendRef) -> bool:
        return any(
            grant.ref.namespace == backend.namespace
            and grant.permits(
                GATEWAY_GROUP, "HTTPRoute", route.ref.namespace, backend.group, backend.kind, backend.name
            )
            for grant in self.grants.values()
        )

    # ------------------------------------------------------------------ ModelRoute binding

    def bound_listeners(self, parents: Iterable[ParentRef], route_namespace: str) -> list[ListenerState]:
        """The serving listeners a ModelRoute's parentRefs bind it to (Kthena §5.2, with Gateway API's
        listener rules: sectionName, port, allowedRoutes namespaces)."""
        resolution = self.resolve()
        out: list[ListenerState] = []
        for parent in parents:
            state = self._parent_state(parent, route_namespace, (), resolution.gateways)
            if state is not None and state.accepted.ok:
                out.extend(x for x in state.listeners if x not in out)
        return out
