"""The OpenAI-compatible HTTP surface and the request pipeline (spec §3-§6, §13).

``Router`` owns the routing table, scheduler, rate limiter, upstream client and access log; the
aiohttp application it builds parses a request, matches a route, takes rate-limit tokens, picks
endpoints and proxies (aggregated or prefill/decode). Every failure is a :class:`RouterError`
rendered as an OpenAI error body. The routing table is fed by :class:`BusFeed` in production and
directly in unit tests.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ferry_router import errors
from ferry_router.admission import AdmissionQueue
from ferry_router.apis import CHAT_PATH, CLIENT_API, TRANSLATED_PATHS, client_api
from ferry_router.apis.messages import MESSAGES_PATH
from ferry_router.apis.responses import RESPONSES_PATH
from ferry_router.auth import AUTH_FAILURES, AuthError, JWTAuthenticator
from ferry_router.cold_start import ColdStartHold
from ferry_router.external import ExternalProxy
from ferry_router.fairness import Fairness
from ferry_router.http_server import LeanServer
from ferry_router.matching import Match, fallback_order, match_route
from ferry_router.observability import (
    ACTIVE,
    RATE_LIMITED,
    TARGET_FALLBACKS,
    AccessLog,
    RequestRecord,
    Tracing,
    active_downstream,
    child_span,
    inject_context,
    path_label,
    tracer,
)
from ferry_router.pd import PDCall, connector_for, run_pairs
from ferry_router.prompt import estimate_tokens, extract_prompt
from ferry_router.proxy import (
    STARTED_RESPONSE,
    Attempt,
    HeaderEdit,
    UpstreamClient,
    UsageCallback,
    forward,
    inject_usage,
    upstream_headers,
)
from ferry_router.ratelimit import RateLimiter
from ferry_router.scheduler import Scheduler, SchedulingContext, SchedulingError
from ferry_router.scheduler.framework import PDPair
from ferry_router.scheduler.kvcache_aware import KVCacheAware
from ferry_router.scheduler.prefix_cache import PrefixCache
from ferry_router.served import engine_model
from ferry_router.session_boost import SessionBoost
from ferry_router.state.resources import Route, Server, Target
from ferry_router.state.table import Endpoint, RoutingTable

log = logging.getLogger(__name__)
RouteFilter = Callable[[Route], bool]
Fallback = Callable[[], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request, RequestRecord], Awaitable[web.StreamResponse]]

INFERENCE_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", RESPONSES_PATH, MESSAGES_PATH}
)
JSON = "application/json"


_ids = random.Random()


@dataclass(slots=True)
class Upstream:
    """Where a routed request goes: an endpoint group (a ModelServer, or an InferencePool in
    gateway mode) and what to send. ``pd`` overrides the group's own prefill/decode setting;
    ``path_qs``/``headers`` override the client's (HTTPRoute rewrites and header filters)."""

    server_key: str
    server: Server
    body: dict[str, Any]
    ctx: SchedulingContext
    retry_on_404: bool = False
    pd: bool | None = None
    path_qs: str | None = None
    headers: CIMultiDict[str] | None = None
    edit_headers: HeaderEdit | None = None


def new_request_id() -> str:
    """A random UUIDv4 string (``uuid.uuid4()`` is several times slower; a request id needs no
    system randomness, and ``os.urandom`` is a system call per request)."""
    h = f"{_ids.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def end_server_span(span: Span, record: RequestRecord) -> None:
    span.set_attribute("http.response.status_code", record.status)
    span.set_attribute("ferry.request_id", record.request_id)
    if record.model:
        span.set_attribute("gen_ai.request.model", record.model)
    if record.model_server:
        span.set_attribute("ferry.model_server", record.model_server)
    if record.selected_pod:
        span.set_attribute("ferry.endpoint", record.selected_pod)
    if record.status >= 500:
        span.set_status(Status(StatusCode.ERROR, record.error_message))
    span.end()


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def started_or(request: web.Request, fallback: web.StreamResponse) -> web.StreamResponse:
    """The response already streaming to the client, if any (a second one cannot be sent)."""
    started = request.get(STARTED_RESPONSE)
    return fallback if started is None else started


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type=JSON)


def error_response(error: errors.RouterError, path: str = "") -> web.Response:
    """The error in the shape of the client's API (Anthropic's for ``/v1/messages``, else OpenAI's)."""
    body = error.body(anthropic=path == MESSAGES_PATH)
    return web.Response(body=body, status=error.status, content_type=JSON, headers=error.headers)


class Router:
    def __init__(
        self,
        table: RoutingTable,
        scheduler: Scheduler,
        limiter: RateLimiter,
        client: UpstreamClient,
        access_log: AccessLog,
        *,
        max_body_bytes: int = 8 * 1024 * 1024,
        ready: Any = None,
        cold_start: ColdStartHold | None = None,
        authenticator: JWTAuthenticator | None = None,
        fairness: Fairness | None = None,
        session_boost: SessionBoost | None = None,
        native_apis: frozenset[str] = frozenset(),
    ) -> None:
        self.table = table
        self.scheduler = scheduler
        self.limiter = limiter
        self.client = client
        self.access_log = access_log
        self.in_flight = 0
        """Requests being handled by this router (what ``kthena_router_active_requests`` shows)."""
        self.max_body_bytes = max_body_bytes
        self._ready = ready or (lambda: True)
        self.authenticator = authenticator
        self.fairness = fairness
        self.session_boost = session_boost
        if fairness is not None or session_boost is not None:
            table.route_listeners.append(self._forget_queue)
        self.cold_start = cold_start
        self.translated = TRANSLATED_PATHS - native_apis
        """Client APIs served through the engine's chat completions (the rest are proxied as they are)."""
        self.external = ExternalProxy(table.providers, client)
        table.route_listeners.append(limiter.on_route)
        for plugin in scheduler.plugins:
            if isinstance(plugin, PrefixCache | KVCacheAware):
                table.endpoint_removed.append(plugin.forget)

    # ------------------------------------------------------------------ application

    def build_server(self, catch_all: Handler | None = None, *, management: bool = True) -> web.Server:
        """The listener's request handler: probes (``management``), then the model list and
        inference, or ``catch_all`` for every path (a Gateway listener). The router's own port is
        served by :class:`LeanServer` (an asyncio protocol over httptools); a Gateway listener by
        aiohttp's low-level server (the router dispatches by path itself, so no URL dispatcher or
        application layer runs per request)."""
        serve = self.wrapped(catch_all or self.serve_plain)
        probes = {"/healthz": self.healthz, "/readyz": self.readyz} if management else {}

        async def handle(request: web.Request) -> web.StreamResponse:
            probe = probes.get(request.path) if request.method in ("GET", "HEAD") else None
            return await (probe(request) if probe is not None else serve(request))

        limit = self.max_body_bytes
        if catch_all is None:
            # the router's own port: the lean server (ferry_router.http_server)
            return LeanServer(handle, max_body_bytes=limit)
        loop = asyncio.get_running_loop()

        def make_request(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: RequestHandler,
            writer: AbstractStreamWriter,
            task: asyncio.Task[None],
        ) -> web.Request:
            return web.Request(message, payload, protocol, writer, task, loop, client_max_size=limit)

        return web.Server(handle, request_factory=make_request, access_log=None)  # type: ignore[arg-type]

    async def serve_plain(self, request: web.Request, record: RequestRecord) -> web.StreamResponse:
        """What the router's own port does without a Gateway listener for the request."""
        if request.method == "GET" and request.path == "/v1/models":
            return await self.list_models(request, record)
        return await self.inference(request, record)

    async def healthz(self, _: web.Request) -> web.Response:
        return json_response({"message": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        if self._ready():
            return json_response({"message": "router is ready"})
        return json_response({"message": "router is not ready"}, status=503)

    def wrapped(self, handler: Any) -> Any:
        """Server span, request record, error rendering, metrics and access log around ``handler``."""
        loop = asyncio.get_running_loop()  # once: before Python 3.12 each call is a getpid()

        async def serve(request: web.Request) -> web.StreamResponse:
            ACTIVE.inc()
            self.in_flight += 1
            request_id = request.headers.get("x-request-id") or new_request_id()
            record = RequestRecord(
                method=request.method,
                path=request.path,
                protocol=f"HTTP/{request.version.major}.{request.version.minor}",
                request_id=request_id,
            )
            span = None
            if Tracing.enabled:
                span = tracer.start_span(
                    f"{request.method} {path_label(request.path)}",
                    context=propagate.extract(request.headers),
                    kind=SpanKind.SERVER,
                )
            response: web.StreamResponse
            try:
                if self.authenticator is not None and request.path.startswith("/v1/"):
                    await self._authenticate(request, record)
                if span is None:
                    response = await handler(request, record)
                else:
                    with trace.use_span(span, end_on_exit=False):
                        response = await handler(request, record)
            except errors.RouterError as exc:
                record.error_type, record.error_message = exc.reason, exc.message
                response = started_or(request, error_response(exc, request.path))
            except ConnectionError as exc:  # the client went away mid-answer
                record.error_type, record.error_message = "client_disconnected", repr(exc)
                response = started_or(request, web.Response(status=499))
            except Exception as exc:
                log.exception("request %s failed", request_id)
                record.error_type, record.error_message = "internal", repr(exc)
                response = started_or(request, error_response(errors.internal(), request.path))
            finally:
                ACTIVE.dec()
                self.in_flight -= 1
            record.status = response.status
            if span is not None:
                end_server_span(span, record)
            logged = request.path.startswith("/v1/")
            if record.model or logged:
                # after the answer: aiohttp writes it in this same task step, right after the return
                loop.call_soon(self._account, record, logged, loop)
            return response

        return serve

    def _account(self, record: RequestRecord, logged: bool, loop: asyncio.AbstractEventLoop) -> None:
        """A finished request's metrics and access-log line (run once its answer is written, so the
        client does not wait for them; their durations include writing the answer)."""
        if record.model:
            record.record_metrics()
        if logged:
            # nothing else in flight: write the line now, while the loop would idle, rather than
            # in the next turn, where it would delay the next request's handling
            self.access_log.write(record, loop, now=self.in_flight == 0)

    def _forget_queue(self, key: str, route: Any) -> None:
        """A model's queue goes away with its last route (its waiters are cancelled)."""
        for queues in (self.fairness, self.session_boost):
            if queues is None:
                continue
            for model in queues.models():
                if model not in self.table.by_model:
                    queues.forget_model(model)

    async def _authenticate(self, request: web.Request, record: RequestRecord) -> None:
        """JWT check (spec §9): the subject becomes the request's user, or the request gets 401."""
        assert self.authenticator is not None
        try:
            identity = await self.authenticator.authenticate(request.headers.get("Authorization"))
        except AuthError as exc:
            AUTH_FAILURES.labels(exc.reason).inc()
            raise errors.unauthorized(str(exc)) from None
        record.user = identity.user

    async def list_models(self, request: web.Request, record: RequestRecord) -> web.Response:
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": "ferry"} for n in self.table.model_names()
        ]
        return json_response({"object": "list", "data": data})

    # ------------------------------------------------------------------ inference

    async def inference(self, request: web.Request, record: RequestRecord) -> web.StreamResponse:
        if request.path not in INFERENCE_PATHS:
            raise errors.unsupported_path(request.method, request.path)
        if request.method != "POST":
            raise errors.method_not_allowed(request.method, request.path)
        body = await self.read_json(request)
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise errors.missing_model()
        record.model = model
        known = self.table.known_model(model)
        record.metrics_model = model if known else "unknown"
        return await self.route_model(request, record, body, model)

    async def route_model(
        self,
        request: web.Request,
        record: RequestRecord,
        body: dict[str, Any],
        model: str,
        allowed: RouteFilter | None = None,
        fallback: Fallback | None = None,
    ) -> web.StreamResponse:
        """Serve a parsed inference request by ModelRoute. Gateway mode passes ``allowed`` (the routes
        bound to the listener the request came in on) and ``fallback`` (HTTPRoutes, tried when no
        ModelRoute matches)."""
        downstream = active_downstream(record.metrics_model)
        downstream.inc()
        try:
            return await self._route(request, record, body, model, allowed, fallback)
        finally:
            downstream.dec()

    async def read_json(self, request: web.Request) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise errors.body_too_large(self.max_body_bytes)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise errors.body_too_large(self.max_body_bytes) from exc
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise errors.invalid_json(str(exc)) from exc
        if not isinstance(body, dict):
            raise errors.not_an_object()
        return body

    def _candidates(self, server_key: str, server: Server) -> list[Endpoint]:
        """The endpoints a request for ``server`` may go to (decode and prefill ones for PD)."""
        if server.pd_group is not None:
            sets = self.table.pd.get(server_key)
            return [*sets.decode, *sets.prefill] if sets is not None else []
        return list(self.table.server_endpoints(server_key))

    async def _route(
        self,
        request: web.Request,
        record: RequestRecord,
        body: dict[str, Any],
        model: str,
        allowed: RouteFilter | None,
        fallback: Fallback | None,
    ) -> web.StreamResponse:
        prompt = extract_prompt(body)
        record.input_tokens = estimate_tokens(prompt)
        match = match_route(self.table, model, request.path, request.headers, allowed=allowed)
        if match is None:
            if fallback is not None:
                return await fallback()
            raise errors.unknown_model(model)
        match = self._serviceable(match)
        record.model_route = match.route.key
        try:
            await self.limiter.admit(match.route.key, model, record.input_tokens)
        except errors.RateLimited as exc:
            RATE_LIMITED.labels(record.metrics_model, exc.limit_type, path_label(request.path)).inc()
            raise
        # spec §10/§11: after the rate limit, before scheduling
        queue: AdmissionQueue | None = None
        session = ""
        if self.fairness is not None:
            fair = self.fairness.queue(model)
            await fair.admit(record.user, lambda: client_gone(request))
            queue = fair
        elif self.session_boost is not None and match.target.server is not None:
            session = request.headers.get(self.session_boost.settings.header, "")
            boost = self.session_boost.queue(model)
            server_key = match.server_key or ""
            await boost.admit(
                session, lambda: self.table.server_endpoints(server_key), lambda: client_gone(request)
            )
            queue = boost
        try:
            response = await self._serve_route(request, record, body, model, prompt, match)
        finally:
            if queue is not None:
                queue.release()
        if session and self.session_boost is not None and response.status < 400:
            await self.session_boost.completed(session)
        return response

    def _serviceable(self, match: Match) -> Match:
        """``match`` if its target can serve now, else the first of the rule's other targets that
        can (weighted order): an in-cluster ModelServer without ready endpoints falls over to an
        external provider and the other way round. When none can, ``match`` (and its error)."""
        if len(match.rule.targets) == 1 or self._can_serve(match.namespace, match.target):
            return match
        for target in fallback_order(match.rule, match.target):
            if self._can_serve(match.namespace, target):
                TARGET_FALLBACKS.labels(match.route.key).inc()
                return replace(match, target=target)
        return match

    def _can_serve(self, namespace: str, target: Target) -> bool:
        if target.provider is not None:
            return self.table.providers.ready(namespace, target.provider)
        key = f"{namespace}/{target.server}"
        server = self.table.servers.get(key)
        if server is None:
            return False
        if server.pd_group is not None:
            sets = self.table.pd.get(key)
            return sets is not None and bool(sets.decode)
        return bool(self.table.server_endpoints(key))

    async def _serve_route(
        self,
        request: web.Request,
        record: RequestRecord,
        body: dict[str, Any],
        model: str,
        prompt: str,
        match: Match,
    ) -> web.StreamResponse:
        route_key = match.route.key

        async def on_usage(prompt_tokens: int, completion_tokens: int) -> None:
            record.output_tokens = completion_tokens
            await self.limiter.record_output(route_key, completion_tokens)
            if self.fairness is not None:
                await self.fairness.record(record.user, model, prompt_tokens, completion_tokens)

        if match.target.provider is not None:
            record.t_processed = record.t_upstream_start = time.perf_counter()
            try:
                key = f"{match.namespace}/{match.target.provider}"
                return await self.external.serve(request, record, body, key, on_usage)
            finally:
                record.t_upstream_end = time.perf_counter()
        server_key = match.server_key
        server = self.table.servers.get(server_key)
        if server is None:
            raise errors.server_missing(server_key)
        record.model_server = server_key
        upstream_model = model if match.is_lora or not server.model else server.model
        if not match.is_lora:
            upstream_model = engine_model(upstream_model, self._candidates(server_key, server))
        record.upstream_model = upstream_model
        path_qs: str | None = None
        if request.path in self.translated:
            api = client_api(request.path, body)
            assert api is not None
            body = api.chat_request()  # a 400 in the API's own shape when it cannot be served
            request[CLIENT_API] = api
            path_qs = CHAT_PATH + (f"?{request.query_string}" if request.query_string else "")
        body["model"] = upstream_model
        ctx = SchedulingContext(
            model=model,
            upstream_model=upstream_model,
            prompt=prompt,
            metrics_model=record.metrics_model,
            body=body,
            lora=match.is_lora,
        )
        return await self.dispatch(
            request,
            record,
            Upstream(server_key, server, body, ctx, retry_on_404=match.is_lora, path_qs=path_qs),
            on_usage,
        )

    async def dispatch(
        self, request: web.Request, record: RequestRecord, up: Upstream, on_usage: UsageCallback
    ) -> web.StreamResponse:
        """Schedule among the endpoints of ``up.server`` (prefill/decode pairs when it is PD) and
        proxy, trying the ranked candidates in order."""
        server_key, server, body, ctx = up.server_key, up.server, up.body, up.ctx
        dest = record.labels()
        dest_labels = (server_key, *dest)
        headers = (
            up.headers if up.headers is not None else upstream_headers(request.headers, record.request_id)
        )
        path_qs = up.path_qs if up.path_qs is not None else request.path_qs
        record.t_processed = time.perf_counter()

        pd = up.pd if up.pd is not None else server.pd_group is not None
        if self.cold_start is not None and not self.cold_start.ready(server, pd):
            await self.cold_start.hold(server, ctx.model)
        if pd:
            sets = self.table.pd.get(server_key)
            if sets is None or not sets.decode:
                raise errors.no_endpoints(server_key)
            with child_span("schedule"):
                if self.scheduler.preparers:
                    await self.scheduler.prepare(ctx, [*sets.decode, *sets.prefill])
                try:
                    pairs = self.scheduler.rank_pd(ctx, sets)
                except SchedulingError as exc:
                    raise errors.unschedulable(server_key, str(exc)) from exc
            call = PDCall(
                request=request,
                client=self.client,
                server=server,
                path_qs=path_qs,
                body=body,
                headers=headers,
                record=record,
                on_usage=on_usage,
                path_label=path_label(request.path),
                dest_labels=dest_labels,
            )
            record.t_upstream_start = time.perf_counter()

            def served(pair: PDPair) -> None:
                self.scheduler.served(ctx, [pair.decode, pair.prefill])

            try:
                return await run_pairs(call, connector_for(server.connector), pairs, served)
            finally:
                record.t_upstream_end = time.perf_counter()

        endpoints = self.table.server_endpoints(server_key)
        if not endpoints:
            raise errors.no_endpoints(server_key)
        with child_span("schedule"):
            if self.scheduler.preparers:
                await self.scheduler.prepare(ctx, endpoints)
            try:
                ranked = self.scheduler.rank(ctx, endpoints, members=self.table.members.get(server_key))
            except SchedulingError as exc:
                raise errors.unschedulable(server_key, str(exc)) from exc
        self.scheduler.dispatching(ctx, ranked[0])
        hide_usage = inject_usage(body)
        record.t_upstream_start = time.perf_counter()
        inject_context(headers)
        attempt = Attempt(
            client=self.client,
            server=server,
            path_qs=path_qs,
            # an exact-size copy: orjson's bytes keep a 4 KiB allocation, and the body lives as long as
            # the request (retries), which for 1,000 open streams was 4 MiB
            body=bytes(memoryview(orjson.dumps(body))),
            headers=headers,
            hide_usage=hide_usage,
            retry_on_404=up.retry_on_404,
            dest_labels=dest_labels,
            edit_headers=up.edit_headers,
        )
        try:
            response, endpoint = await forward(request, attempt, ranked, record, on_usage)
        finally:
            record.t_upstream_end = time.perf_counter()
        self.scheduler.served(ctx, [endpoint])
        return response
