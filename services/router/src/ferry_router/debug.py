"""The localhost-only debug server: routes, servers and endpoints with their scraped metrics.

``GET /debug/config_dump/{modelroutes|modelservers|pods}`` and
``GET /debug/config_dump/namespaces/{ns}/{kind}/{name}`` (spec §14.3), plus ``/debug/invalid``
(objects the router refused and why).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ferry_router.app import json_response
from ferry_router.state.table import Endpoint, RoutingTable

KINDS = ("modelroutes", "modelservers", "pods")


def _route(table: RoutingTable, key: str) -> dict[str, Any]:
    route = table.routes[key]
    return {"name": route.name, "namespace": route.namespace, "spec": route.spec}


def _server(table: RoutingTable, key: str) -> dict[str, Any]:
    server = table.servers[key]
    sets = table.pd.get(key)
    return {
        "name": server.name,
        "namespace": server.namespace,
        "spec": server.spec,
        "associatedPods": sorted(table.members.get(key, {})),
        "decodePods": [e.key for e in sets.decode] if sets else [],
        "prefillPods": [e.key for e in sets.prefill] if sets else [],
    }


def _observed(endpoint: Endpoint) -> dict[str, Any]:
    """least-latency's own measures of the streams this router relayed there."""
    seen, now = endpoint.latency, time.monotonic()
    return {
        "awaitingFirstToken": seen.awaiting_first,
        "ttftPerQueuedSeconds": seen.ttft_unit,
        "ttftAgeSeconds": round(now - seen.ttft_at, 3) if seen.ttft_at else None,
        "tpotPerInflightSeconds": seen.tpot_unit,
        "tpotAgeSeconds": round(now - seen.tpot_at, 3) if seen.tpot_at else None,
    }


def _pod(endpoint: Endpoint, detail: bool = False) -> dict[str, Any]:
    m = endpoint.metrics
    item: dict[str, Any] = {
        "name": endpoint.pod.name,
        "namespace": endpoint.pod.namespace,
        "engine": endpoint.engine,
        "models": sorted(m.models or ()),
        "modelServers": sorted(endpoint.servers),
        "inflight": endpoint.inflight,
        "metrics": {
            "gpuCacheUsage": m.kv_cache_usage,
            "requestWaitingNum": m.waiting,
            "requestRunningNum": m.running,
            "tpot": m.tpot,
            "ttft": m.ttft,
            "scraped": m.scraped,
            "consecutiveScrapeFailures": m.failures,
            "loadSource": m.source or None,  # "push" (the sidecar) or "scrape"
            "loadAgeSeconds": round(time.monotonic() - m.updated, 3) if m.updated else None,
            "loadStale": m.stale,
        },
        "observed": _observed(endpoint),
    }
    if detail:
        pod = endpoint.pod
        item["podInfo"] = {
            "podIP": pod.ip,
            "nodeName": pod.node,
            "phase": pod.phase,
            "startTime": pod.start_time,
            "labels": pod.labels,
        }
    return item


def build_debug_app(table: RoutingTable) -> web.Application:
    async def dump(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind == "modelroutes":
            items = [_route(table, k) for k in sorted(table.routes)]
        elif kind == "modelservers":
            items = [_server(table, k) for k in sorted(table.servers)]
        elif kind == "pods":
            items = [_pod(table.endpoints[k]) for k in sorted(table.endpoints)]
        else:
            return json_response({"error": f"unknown kind {kind!r}; one of {', '.join(KINDS)}"}, 404)
        return json_response({kind: items})

    async def one(request: web.Request) -> web.Response:
        kind, ns, name = (request.match_info[k] for k in ("kind", "ns", "name"))
        key = f"{ns}/{name}"
        if kind == "modelroutes" and key in table.routes:
            return json_response(_route(table, key))
        if kind == "modelservers" and key in table.servers:
            return json_response(_server(table, key))
        if kind == "pods" and key in table.endpoints:
            return json_response(_pod(table.endpoints[key], detail=True))
        return json_response({"error": f"{kind} {key} not found"}, 404)

    async def invalid(_: web.Request) -> web.Response:
        return json_response({"invalid": table.invalid})

    app = web.Application()
    app.router.add_get("/debug/config_dump/{kind}", dump)
    app.router.add_get("/debug/config_dump/namespaces/{ns}/{kind}/{name}", one)
    app.router.add_get("/debug/invalid", invalid)
    return app
