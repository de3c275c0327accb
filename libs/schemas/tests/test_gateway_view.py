"""Gateway API attachment rules (ferry_schemas.gateway.view): what the router serves and what the
status service reports come from this one computation."""

from __future__ import annotations

from typing import Any

from ferry_schemas.bus import Resource
from ferry_schemas.gateway.objects import parse_parent_refs
from ferry_schemas.gateway.view import GatewayWorld, intersect_hostnames

CONTROLLER = "volcano.sh/kthena-router"


def meta(name: str, namespace: str = "", created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "creationTimestamp": created, "generation": 1}
    if namespace:
        out["namespace"] = namespace
    return out


def gateway(
    name: str,
    namespace: str,
    *listeners: dict[str, Any],
    cls: str = "kthena-router",
    created: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    return {
        "metadata": meta(name, namespace, created),
        "spec": {"gatewayClassName": cls, "listeners": list(listeners)},
    }


def listener(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": port, "protocol": "HTTP", **extra}


def route(
    name: str, namespace: str, parents: list[dict[str, Any]], backends: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": meta(name, namespace),
        "spec": {"parentRefs": parents, "rules": [{"backendRefs": backends}], **spec},
    }


POOL_REF = {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "pool"}


def world() -> GatewayWorld:
    w = GatewayWorld(CONTROLLER)
    w.apply(
        Resource.GATEWAY_CLASSES,
        "/kthena-router",
        {"metadata": meta("kthena-router"), "spec": {"controllerName": CONTROLLER}},
    )
    w.apply(
        Resource.GATEWAY_CLASSES,
        "/other",
        {"metadata": meta("other"), "spec": {"controllerName": "example.com/x"}},
    )
    w.apply(Resource.INFERENCE_POOLS, "apps/pool", {
        "metadata": meta("pool", "apps"),
        "spec": {"selector": {"matchLabels": {"app": "m"}}, "targetPorts": [{"number": 8000}]},
    })  # fmt: skip
    return w


def test_only_gateways_of_ferrys_class_are_served_and_listeners_group_by_port() -> None:
    w = world()
    w.apply(Resource.GATEWAYS, "sys/a", gateway("a", "sys", listener("http", 8081)))
    w.apply(Resource.GATEWAYS, "sys/b", gateway("b", "sys", listener("http", 8082, hostname="x.example.com")))
    w.apply(Resource.GATEWAYS, "sys/foreign", gateway("foreign", "sys", listener("http", 9000), cls="other"))
    res = w.resolve()
    assert set(res.gateways) == {"sys/a", "sys/b"}
    assert set(res.listeners_by_port) == {8081, 8082}
    assert res.classes["kthena-router"].ok
    assert "other" not in res.classes


def test_listener_problems_use_gateway_api_reasons() -> None:
    w = world()
    w.apply(
        Resource.GATEWAYS,
        "sys/old",
        gateway("old", "sys", listener("one", 8081), created="2026-01-01T00:00:00Z"),
    )
    w.apply(Resource.GATEWAYS, "sys/new", gateway(
        "new", "sys", listener("dup", 8081), {"name": "tls", "port": 8443, "protocol": "HTTPS"},
        listener("kinds", 8090, allowedRoutes={"kinds": [{"kind": "GRPCRoute"}]}),
        created="2026-02-01T00:00:00Z",
    ))  # fmt: skip
    res = w.resolve()
    new = {x.listener.name: x for x in res.gateways["sys/new"].listeners}
    assert new["dup"].conflicted is not None
    assert new["dup"].conflicted.reason == "HostnameConflict"
    assert res.gateways["sys/old"].listeners[0].conflicted is None
    assert new["tls"].accepted.reason == "UnsupportedProtocol"
    assert new["kinds"].resolved_refs.reason == "InvalidRouteKinds"
    assert [x.gateway for x in res.listeners_by_port[8081]] == ["sys/old"]


def test_route_attachment_and_backend_resolution() -> None:
    w = world()
    w.apply(
        Resource.GATEWAYS,
        "sys/gw",
        gateway(
            "gw",
            "sys",
            listener("same", 8081),
            listener("all", 8082, allowedRoutes={"namespaces": {"from": "All"}}),
        ),
    )
    parent = {"name": "gw", "namespace": "sys"}
    w.apply(Resource.HTTP_ROUTES, "apps/ok", route("ok", "apps", [parent], [POOL_REF]))
    w.apply(
        Resource.HTTP_ROUTES,
        "apps/section",
        route("section", "apps", [{**parent, "sectionName": "same"}], [POOL_REF]),
    )
    w.apply(
        Resource.HTTP_ROUTES,
        "apps/missing",
        route("missing", "apps", [parent], [{**POOL_REF, "name": "nope"}]),
    )
    w.apply(
        Resource.HTTP_ROUTES,
        "apps/cross",
        route("cross", "apps", [parent], [{**POOL_REF, "namespace": "other"}]),
    )
    w.apply(
        Resource.HTTP_ROUTES,
        "apps/kind",
        route("kind", "apps", [parent], [{"group": "example.com", "kind": "Thing", "name": "x"}]),
    )
    w.apply(Resource.HTTP_ROUTES, "apps/mirror", route("mirror", "apps", [parent], [POOL_REF]) | {
        "spec": {
            "parentRefs": [parent],
            "rules": [{"backendRefs": [POOL_REF], "filters": [{"type": "RequestMirror"}]}],
        }
    })  # fmt: skip
    res = w.resolve()
    ok = res.routes["apps/ok"]
    assert ok.parents[0].accepted.ok
    assert [x.listener.name for x in ok.parents[0].listeners] == ["all"]
    assert ok.resolved_refs.ok
    assert res.routes["apps/section"].parents[0].accepted.reason == "NotAllowedByListeners"
    assert res.routes["apps/missing"].resolved_refs.reason == "BackendNotFound"
    assert res.routes["apps/cross"].resolved_refs.reason == "RefNotPermitted"
    assert res.routes["apps/kind"].resolved_refs.reason == "InvalidKind"
    assert res.routes["apps/mirror"].parents[0].accepted.reason == "UnsupportedValue"
    assert res.gateways["sys/gw"].listeners[1].attached_routes == 4  # ok, missing, cross, kind
    assert res.pool_parents == {"apps/pool": ["sys/gw"]}
    # a ReferenceGrant in the target namespace lets the cross-namespace reference resolve
    w.apply(
        Resource.INFERENCE_POOLS,
        "other/pool",
        {
            "metadata": meta("pool", "other"),
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "targetPorts": [{"number": 1}]},
        },
    )
    w.apply(Resource.REFERENCE_GRANTS, "other/grant", {"metadata": meta("grant", "other"), "spec": {
        "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "apps"}],
        "to": [{"group": "inference.networking.k8s.io", "kind": "InferencePool"}],
    }})  # fmt: skip
    assert w.resolve().routes["apps/cross"].resolved_refs.ok
    # the pool disappears: the route's references no longer resolve
    w.apply(Resource.INFERENCE_POOLS, "apps/pool", None)
    assert w.resolve().routes["apps/ok"].resolved_refs.reason == "BackendNotFound"


def test_model_route_binding_by_parent_refs() -> None:
    w = world()
    w.apply(
        Resource.GATEWAYS,
        "sys/a",
        gateway("a", "sys", listener("http", 8081, allowedRoutes={"namespaces": {"from": "All"}})),
    )
    w.apply(
        Resource.GATEWAYS,
        "sys/b",
        gateway("b", "sys", listener("http", 8082, allowedRoutes={"namespaces": {"from": "All"}})),
    )
    bound = w.bound_listeners(
        parse_parent_refs([{"name": "b", "namespace": "sys", "kind": "Gateway"}], "default"), "default"
    )
    assert [(x.gateway, x.listener.port) for x in bound] == [("sys/b", 8082)]
    assert w.bound_listeners(parse_parent_refs([{"name": "missing"}], "default"), "default") == []


def test_hostname_intersection() -> None:
    assert intersect_hostnames(None, ()) == ()
    assert intersect_hostnames("*.example.com", ("a.example.com", "b.other.com")) == ("a.example.com",)
    assert intersect_hostnames("a.example.com", ("*.example.com",)) == ("a.example.com",)
    assert intersect_hostnames("a.example.com", ("b.example.com",)) is None
