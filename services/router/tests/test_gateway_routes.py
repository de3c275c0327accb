"""HTTPRoute matching precedence and filters on one Gateway listener (pure functions)."""

from __future__ import annotations

from typing import Any

from ferry_router.gateway.filters import modify_headers, rewrite_path
from ferry_router.gateway.httproutes import HTTPRouteIndex, select_listener
from ferry_router.gateway.pools import pool_server, pool_server_key
from ferry_router.state.table import RoutingTable
from ferry_schemas.bus import Resource
from ferry_schemas.gateway.objects import RouteMatch, parse_inference_pool
from ferry_schemas.gateway.view import GatewayWorld
from multidict import CIMultiDict

from .objects import pod

CONTROLLER = "volcano.sh/kthena-router"
POOL = {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "pool"}


def meta(name: str, namespace: str = "", created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if namespace:
        out["namespace"] = namespace
    return out


def world(*routes: tuple[str, list[dict[str, Any]], list[str]]) -> GatewayWorld:
    w = GatewayWorld(CONTROLLER)
    w.apply(Resource.GATEWAY_CLASSES, "c", {"metadata": meta("c"), "spec": {"controllerName": CONTROLLER}})
    listeners = [
        {"name": "any", "port": 80, "protocol": "HTTP"},
        {"name": "exact", "port": 80, "protocol": "HTTP", "hostname": "a.example.com"},
        {"name": "wild", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"},
    ]
    w.apply(
        Resource.GATEWAYS,
        "ns/gw",
        {"metadata": meta("gw", "ns"), "spec": {"gatewayClassName": "c", "listeners": listeners}},
    )
    w.apply(
        Resource.INFERENCE_POOLS,
        "ns/pool",
        {
            "metadata": meta("pool", "ns"),
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "targetPorts": [{"number": 8000}]},
        },
    )
    for i, (name, matches, hostnames) in enumerate(routes):
        spec = {
            "parentRefs": [{"name": "gw"}],
            "hostnames": hostnames,
            "rules": [{"matches": matches, "backendRefs": [POOL]}],
        }
        w.apply(
            Resource.HTTP_ROUTES,
            f"ns/{name}",
            {"metadata": meta(name, "ns", f"2026-01-0{i + 1}T00:00:00Z"), "spec": spec},
        )
    return w


def test_listener_selection_by_host() -> None:
    listeners = world().resolve().listeners_by_port[80]
    assert select_listener(listeners, "a.example.com").listener.name == "exact"  # type: ignore[union-attr]
    assert select_listener(listeners, "b.example.com").listener.name == "wild"  # type: ignore[union-attr]
    assert select_listener(listeners, "other.org").listener.name == "any"  # type: ignore[union-attr]


def test_precedence_exact_then_longest_prefix_then_headers() -> None:
    w = world(
        ("root", [{"path": {"type": "PathPrefix", "value": "/"}}], []),
        ("v1", [{"path": {"type": "PathPrefix", "value": "/v1"}}], []),
        ("exact", [{"path": {"type": "Exact", "value": "/v1/chat/completions"}}], []),
        (
            "header",
            [
                {
                    "path": {"type": "PathPrefix", "value": "/v1"},
                    "headers": [{"name": "X-Tier", "value": "gold"}],
                }
            ],
            [],
        ),
        (
            "query",
            [
                {
                    "path": {"type": "PathPrefix", "value": "/v1"},
                    "queryParams": [{"name": "beta", "value": "1"}],
                }
            ],
            [],
        ),
    )
    res = w.resolve()
    index = HTTPRouteIndex(res)
    listener = select_listener(res.listeners_by_port[80], "other.org")
    assert listener is not None

    def route(
        path: str, headers: dict[str, str] | None = None, query: dict[str, str] | None = None
    ) -> str | None:
        found = index.match(listener, "other.org", "POST", path, CIMultiDict(headers or {}), query or {})
        return found.route_key if found else None

    assert route("/v1/chat/completions") == "ns/exact"
    assert route("/v1/completions", {"x-tier": "gold"}) == "ns/header"
    assert route("/v1/completions", query={"beta": "1"}) == "ns/query"
    assert route("/v1/completions") == "ns/v1"
    assert route("/v1x") == "ns/root"  # PathPrefix is segment-wise: /v1 does not match /v1x
    assert route("/") == "ns/root"


def test_route_hostnames_limit_where_a_route_applies() -> None:
    w = world(("only-b", [{"path": {"type": "PathPrefix", "value": "/"}}], ["b.example.com"]))
    res = w.resolve()
    index = HTTPRouteIndex(res)
    wild = select_listener(res.listeners_by_port[80], "b.example.com")
    assert wild is not None
    assert index.match(wild, "b.example.com", "GET", "/", CIMultiDict(), {}) is not None
    assert index.match(wild, "c.example.com", "GET", "/", CIMultiDict(), {}) is None


def test_filters_rewrite_paths_and_modify_headers() -> None:
    prefix = RouteMatch("PathPrefix", "/api", (), (), None)
    assert (
        rewrite_path("/api/v1/models", {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v1"}, prefix)
        == "/v1/v1/models"
    )
    assert rewrite_path("/api", {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}, prefix) == "/"
    assert (
        rewrite_path("/api/x", {"type": "ReplaceFullPath", "replaceFullPath": "/v1/chat/completions"}, prefix)
        == "/v1/chat/completions"
    )
    headers: CIMultiDict[str] = CIMultiDict({"A": "1", "Drop": "x"})
    modify_headers(
        headers,
        {"set": [{"name": "a", "value": "2"}], "add": [{"name": "a", "value": "3"}], "remove": ["drop"]},
    )
    assert dict(headers) == {"a": "2,3"}


def test_an_inference_pool_is_an_endpoint_group_served_pd_when_its_pods_carry_the_roles() -> None:
    table = RoutingTable()
    raw = {
        "metadata": meta("pool", "default"),
        "spec": {"selector": {"matchLabels": {"app": "m"}}, "targetPorts": [{"number": 9000}]},
    }
    key = pool_server_key("default", "pool")
    table.set_server(key, pool_server(parse_inference_pool(raw)))
    table.apply_pod("default/plain", pod("plain", {"app": "m"}, "127.0.0.2"))
    table.apply_pod("default/other", pod("other", {"app": "x"}, "127.0.0.3"))
    assert [e.name for e in table.server_endpoints(key)] == ["plain"]
    assert not table.pd[key].decode  # no roles: served aggregated
    assert table.endpoints["default/plain"].port == 9000
    group = "modelserving.volcano.sh/group-name"
    role = "modelserving.volcano.sh/role"
    table.apply_pod("default/p", pod("p", {"app": "m", group: "g0", role: "prefill"}, "127.0.0.4"))
    table.apply_pod("default/d", pod("d", {"app": "m", group: "g0", role: "decode"}, "127.0.0.5"))
    sets = table.pd[key]
    assert [e.name for e in sets.decode] == ["d"]
    assert [e.name for e in sets.prefill_for(sets.decode[0])] == ["p"]
    table.set_server(key, None)  # the pool is deleted: its endpoints go
    assert not table.server_endpoints(key)
    assert "default/plain" not in table.endpoints
