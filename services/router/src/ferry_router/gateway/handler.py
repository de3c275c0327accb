"""The request path on a Gateway listener (spec §3.2, §5.2 with a gateway key, §15).

1. The listener: the request's port and Host header pick one of the serving listeners on that
   port (exact hostname, longest wildcard, no hostname); none ⇒ 404 (on the router's own port the
   plain router answers instead, so enabling gateway mode keeps every unbound ModelRoute working).
2. ``/v1`` inference requests: ModelRoutes bound to that listener through ``parentRefs`` (and, on
   the router's own port, ModelRoutes without ``parentRefs``) are tried first, oldest first — two
   routes with the same ``modelName`` on two Gateways each reach their own backend.
3. Otherwise the HTTPRoutes attached to the listener: the first match by Gateway API precedence,
   its filters, a backendRef drawn by weight; an InferencePool backend is scheduled with the
   router's scheduler (prefill/decode when the pool's pods carry those roles), a Service backend
   goes to the ready pods its selector picks.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web
from ferry_schemas.gateway.objects import BackendRef, parse_parent_refs
from ferry_schemas.gateway.view import GatewayWorld, ListenerState, Resolution

from ferry_router import errors
from ferry_router.app import INFERENCE_PATHS, Router, Upstream, json_response
from ferry_router.gateway.filters import apply_filters, edit_response_headers
from ferry_router.gateway.httproutes import Candidate, HTTPRouteIndex, select_listener
from ferry_router.gateway.pools import pool_server_key, service_server_key
from ferry_router.observability import RequestRecord
from ferry_router.prompt import estimate_tokens, extract_prompt
from ferry_router.proxy import Attempt, forward, upstream_headers
from ferry_router.scheduler import SchedulingContext
from ferry_router.state.resources import Route

Handler = Callable[[web.Request, RequestRecord], Awaitable[web.StreamResponse]]
MODEL_LIST_PATHS = frozenset({"/v1/models", "/models"})


def no_listener(host: str, port: int) -> errors.RouterError:
    message = f"No matching listener found for host {host!r} on port {port}"
    return errors.client_error(404, message, "listener_not_found", "route_not_found")


def route_not_found(path: str) -> errors.RouterError:
    return errors.client_error(404, f"route not found for {path}", "route_not_found", "route_not_found")


def backend_error(message: str, reason: str = "inference_pool_selection") -> errors.RouterError:
    """Gateway API: a request whose rule has no usable backend gets a 500."""
    return errors.server_error(500, message, "invalid_backend", reason)


def request_host(request: web.Request) -> str:
    host = request.host or ""
    if host.startswith("["):
        return host[1 : host.find("]")].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


class GatewayHandler:
    """Serves every Gateway listener of the router (one instance; one handler per port)."""

    def __init__(
        self, router: Router, world: GatewayWorld, main_port: int, rng: random.Random | None = None
    ) -> None:
        self.router = router
        self.world = world
        self.main_port = main_port
        self._rng = rng or random.Random()
        self._resolution: Resolution | None = None
        self._index: HTTPRouteIndex | None = None
        self._bound: dict[str, frozenset[tuple[str, str]]] = {}

    def _current(self) -> tuple[Resolution, HTTPRouteIndex]:
        resolution = self.world.resolve()
        if resolution is not self._resolution or self._index is None:
            self._resolution = resolution
            self._index = HTTPRouteIndex(resolution)
            self._bound = {}
        return resolution, self._index

    # ------------------------------------------------------------------ ModelRoute binding

    def _bound_to(self, route: Route) -> frozenset[tuple[str, str]]:
        found = self._bound.get(route.key)
        if found is None:
            parents = parse_parent_refs(route.spec.get("parentRefs"), route.namespace)
            found = frozenset(
                (x.gateway, x.listener.name) for x in self.world.bound_listeners(parents, route.namespace)
            )
            self._bound[route.key] = found
        return found

    def allows(self, listener: ListenerState) -> Callable[[Route], bool]:
        spot = (listener.gateway, listener.listener.name)
        on_main_port = listener.listener.port == self.main_port

        def allowed(route: Route) -> bool:
            if not route.spec.get("parentRefs"):
                return on_main_port
            return spot in self._bound_to(route)

        return allowed

    def bound_models(self, listener: ListenerState) -> list[str]:
        allowed = self.allows(listener)
        table = self.router.table
        names = {r.model_name for r in table.routes.values() if r.model_name and allowed(r)}
        names |= {lora for r in table.routes.values() if allowed(r) for lora in r.lora_adapters}
        return sorted(names)

    # ------------------------------------------------------------------ entry points

    def for_port(self, port: int | None, fallback: Handler | None) -> Handler:
        """The handler of one listener port (``None``: the router's own port, known once bound)."""

        async def handle(request: web.Request, record: RequestRecord) -> web.StreamResponse:
            return await self.handle(self.main_port if port is None else port, request, record, fallback)

        return handle

    async def handle(
        self, port: int, request: web.Request, record: RequestRecord, fallback: Handler | None
    ) -> web.StreamResponse:
        resolution, _ = self._current()
        host = request_host(request)
        listener = select_listener(resolution.listeners_by_port.get(port, []), host)
        if listener is None:
            if fallback is not None:
                return await fallback(request, record)
            raise no_listener(host, port)
        record.gateway = listener.gateway
        if request.method == "GET" and request.path in MODEL_LIST_PATHS:
            data = [
                {"id": n, "object": "model", "created": 0, "owned_by": "ferry"}
                for n in self.bound_models(listener)
            ]
            return json_response({"object": "list", "data": data})
        if request.method == "POST" and request.path in INFERENCE_PATHS:
            body = await self.router.read_json(request)
            model = body.get("model")
            if isinstance(model, str) and model.strip():
                record.model = model
                record.metrics_model = model if self.router.table.known_model(model) else "unknown"

                async def by_http_route() -> web.StreamResponse:
                    return await self.http_route(listener, request, record, body)

                return await self.router.route_model(
                    request, record, body, model, allowed=self.allows(listener), fallback=by_http_route
                )
            return await self.http_route(listener, request, record, body)
        return await self.http_route(listener, request, record, None)

    # ------------------------------------------------------------------ HTTPRoutes

    async def http_route(
        self,
        listener: ListenerState,
        request: web.Request,
        record: RequestRecord,
        body: dict[str, Any] | None,
    ) -> web.StreamResponse:
        _, index = self._current()
        candidate = index.match(
            listener, request_host(request), request.method, request.path, request.headers, request.query
        )
        if candidate is None:
            if record.model:
                raise errors.unknown_model(record.model)
            raise route_not_found(request.path)
        record.http_route = candidate.route_key
        headers = upstream_headers(request.headers, record.request_id)
        outcome = apply_filters(candidate.rule.filters, request, headers, candidate.match)
        if outcome.redirect is not None:  # a redirecting rule needs no backend
            return outcome.redirect
        backend = self._pick_backend(candidate)
        if backend.filters:
            outcome = apply_filters(backend.filters, request, headers, candidate.match, outcome)
            if outcome.redirect is not None:
                return outcome.redirect
        if outcome.host:
            headers["Host"] = outcome.host
        problem = self.world.backend_problem(candidate.route.route, backend)
        if problem is not None:
            raise backend_error(f"backend {backend.kind} {backend.key}: {problem.message}")
        query = f"?{request.query_string}" if request.query_string else ""
        if backend.is_pool:
            return await self._to_pool(request, record, body, backend, headers, outcome.path + query, outcome)
        return await self._to_service(request, record, backend, headers, outcome.path + query, outcome)

    def _pick_backend(self, candidate: Candidate) -> BackendRef:
        backends = [b for b in candidate.rule.backends if b.weight > 0]
        if not backends:
            raise backend_error(
                f"HTTPRoute {candidate.route_key} rule {candidate.rule.index} has no backend with weight > 0"
            )
        total = sum(b.weight for b in backends)
        draw = self._rng.randrange(total)
        for backend in backends:
            draw -= backend.weight
            if draw < 0:
                return backend
        return backends[-1]

    async def _to_pool(
        self,
        request: web.Request,
        record: RequestRecord,
        body: dict[str, Any] | None,
        backend: BackendRef,
        headers: Any,
        path_qs: str,
        outcome: Any,
    ) -> web.StreamResponse:
        table = self.router.table
        key = pool_server_key(backend.namespace, backend.name)
        server = table.servers.get(key)
        record.inference_pool = backend.key
        if server is None:
            message = f"can't find inference pool: {backend.key}"
            raise errors.client_error(404, message, "inference_pool_not_found", "inference_pool_discovery")
        if not table.server_endpoints(key):
            message = f"no available pods for inference pool: {backend.key}"
            raise errors.server_error(503, message, "no_endpoints", "pod_discovery")
        record.model_server = key
        if body is None:
            body = await self.router.read_json(request)
        model = str(body.get("model") or "")
        prompt = extract_prompt(body) if body else ""
        record.input_tokens = estimate_tokens(prompt)
        record.upstream_model = model
        ctx = SchedulingContext(
            model=model, upstream_model=model, prompt=prompt, metrics_model=record.metrics_model
        )
        sets = table.pd.get(key)

        async def on_usage(prompt_tokens: int, completion_tokens: int) -> None:
            record.output_tokens = completion_tokens

        up = Upstream(
            key,
            server,
            body,
            ctx,
            pd=bool(sets and sets.decode),
            path_qs=path_qs,
            headers=headers,
            edit_headers=edit_response_headers(outcome.response_filters),
        )
        return await self.router.dispatch(request, record, up, on_usage)

    async def _to_service(
        self,
        request: web.Request,
        record: RequestRecord,
        backend: BackendRef,
        headers: Any,
        path_qs: str,
        outcome: Any,
    ) -> web.StreamResponse:
        """A Service backend: any ready pod its selector picks, on the Service port's targetPort; the
        request is relayed as it came (not parsed, not scheduled by model)."""
        table = self.router.table
        key = service_server_key(backend.namespace, backend.name)
        base = table.servers.get(key)
        service = self.world.services.get(backend.key)
        target = service.target_port(backend.port or 0) if service is not None else None
        endpoints = table.server_endpoints(key)
        if base is None or target is None or not endpoints:
            message = f"no ready endpoints for Service {backend.key}"
            raise errors.server_error(503, message, "no_endpoints", "pod_discovery")
        record.model_server = key
        self._rng.shuffle(endpoints)
        attempt = Attempt(
            client=self.router.client,
            server=replace(base, port=target),
            path_qs=path_qs,
            body=await request.read(),
            headers=headers,
            hide_usage=False,
            retry_on_404=False,
            dest_labels=(key, *record.labels()),
            edit_headers=edit_response_headers(outcome.response_filters),
            method=request.method,
        )

        async def no_usage(prompt_tokens: int, completion_tokens: int) -> None:
            record.output_tokens = completion_tokens

        response, _ = await forward(request, attempt, endpoints, record, no_usage)
        return response
