"""Upstream calls and response relay for the aggregated (non-PD) path (spec §6.2-6.4).

The client is the router's own lean HTTP/1.1 client (:mod:`ferry_router.upstream`) with
explicit limits: a connect timeout, a bound on the wait for response headers
(``trafficPolicy.timeout`` or the router default), an idle bound on every body read (a stream
that delivers nothing for ``idle_timeout`` seconds is cut and ends with an error event) and a
bounded connection pool (total and per engine; a request waits for a free connection).
Candidates are tried best first; a connection error, a timeout or a 5xx moves to the next one
(after ``trafficPolicy.retry.retryInterval`` when set). A 4xx is the client's problem and is
passed through with the engine's body (Kthena masks it as 503), except a 404 for a LoRA request,
which means the adapter is not loaded there, so the next endpoint is tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ferry_router import errors
from ferry_router.apis import CLIENT_API, ClientApi
from ferry_router.http_server import stream_response
from ferry_router.observability import STREAM_ERRORS, RequestRecord, active_upstream
from ferry_router.state.observed_latency import StreamTiming
from ferry_router.state.resources import Server
from ferry_router.state.table import Endpoint
from ferry_router.upstream import Pool, UpstreamResponse, send_request

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",  # the router answers 100-continue itself and sends the body whole
    }
)
STREAM_TYPES = ("text/event-stream", "application/x-ndjson")
STARTED_RESPONSE = web.RequestKey("ferry.started_response", web.StreamResponse)
"""Request-scoped key of a response whose status line already reached the client."""


class UpstreamError(Exception):
    """One failed attempt; ``timeout`` tells 504 from 502."""

    def __init__(self, message: str, *, status: int = 0, timeout: bool = False, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.timeout = timeout
        self.body = body


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    connect_timeout: float = 5.0
    header_timeout: float = 600.0  # used when the ModelServer sets no trafficPolicy.timeout
    idle_timeout: float = 120.0  # longest silence of an upstream body (between two chunks)
    max_connections: int = 4096  # 0 = no limit
    max_per_host: int = 1024
    keepalive: float = 60.0
    verify_tls: bool = True  # False: an ExternalModelProvider with insecureSkipVerify


class UpstreamClient:
    """One pooled HTTP/1.1 client for every upstream call of the process (:mod:`ferry_router.upstream`)."""

    def __init__(self, settings: UpstreamSettings | None = None) -> None:
        self.settings = settings or UpstreamSettings()
        self._pool: Pool | None = None

    async def start(self) -> None:
        s = self.settings
        self._pool = Pool(
            connect_timeout=s.connect_timeout,
            max_connections=s.max_connections,
            max_per_host=s.max_per_host,
            keepalive=s.keepalive,
            ssl_context=None if s.verify_tls else unverified_tls(),
        )

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def pool(self) -> tuple[int, int]:
        """(connections in use, idle keep-alive connections) of the upstream pool."""
        if self._pool is None:
            return 0, 0
        return self._pool.in_use, self._pool.idle_count()

    async def send(
        self, url: str, body: bytes, headers: Mapping[str, str], limit: float | None, method: str = "POST"
    ) -> UpstreamResponse:
        """Send and wait for the response headers (bounded by ``limit`` seconds); the body is not read."""
        assert self._pool is not None, "UpstreamClient.start() was not called"
        try:
            limit = limit or self.settings.header_timeout
            return await send_request(self._pool, method, url, body, headers, limit)
        except TimeoutError as exc:
            raise UpstreamError(f"{url}: no response within the timeout", timeout=True) from exc
        except OSError as exc:
            raise UpstreamError(f"{url}: {exc.__class__.__name__}: {exc}") from exc


def unverified_tls() -> ssl.SSLContext:
    """TLS without certificate-chain or hostname checks (``insecureSkipVerify``; still TLS)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def upstream_headers(headers: CIMultiDictProxy[str], request_id: str) -> CIMultiDict[str]:
    """Client headers minus hop-by-hop ones, plus ``x-request-id`` and JSON content type."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP:
            out.add(name, value)
    out["X-Request-Id"] = request_id
    out["Content-Type"] = "application/json"
    return out


def response_headers(headers: CIMultiDict[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP and name.lower() != "content-encoding":
            out.add(name, value)
    return out


def inject_usage(body: dict[str, Any]) -> bool:
    """Ask a streaming engine for a usage chunk; True when the router added it (then it is hidden)."""
    if body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    body["stream_options"] = (
        {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    )
    return True


def endpoint_url(server: Server, endpoint: Endpoint, path_qs: str) -> str:
    host = f"[{endpoint.pod.ip}]" if ":" in endpoint.pod.ip else endpoint.pod.ip
    return f"{server.scheme}://{host}:{server.port}{path_qs}"


UsageCallback = Callable[[int, int], Awaitable[None]]
HeaderEdit = Callable[[CIMultiDict[str]], None]
"""Changes the relayed answer's headers (an HTTPRoute ResponseHeaderModifier) before they are sent."""


def _usage_of(chunk: dict[str, Any]) -> tuple[int, int] | None:
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    if not (usage.get("total_tokens") or prompt + completion):
        return None
    return prompt, completion


def is_streaming(response: UpstreamResponse) -> bool:
    return response.content_type in STREAM_TYPES


class StallWatch:
    """Closes an upstream response that delivers nothing for ``idle`` seconds.

    The reader calls :meth:`touch` per chunk (one clock read); the timer fires once per idle
    period and re-arms itself from the last touch, so a busy stream costs no timer per chunk.
    An answer whose body arrived with its head (most small ones) needs no timer at all.
    """

    __slots__ = ("_handle", "_loop", "_upstream", "idle", "last", "stalled")

    def __init__(self, upstream: UpstreamResponse, idle: float) -> None:
        self._loop = upstream.loop
        self._upstream = upstream
        self.idle = idle
        self.last = self._loop.time()
        self.stalled = False
        self._handle: asyncio.TimerHandle | None = None
        if not upstream.complete:
            self._handle = self._loop.call_at(self.last + idle, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()

    def _check(self) -> None:
        if self._loop.time() - self.last >= self.idle:
            self.stalled = True
            self._upstream.close()  # the pending read fails; the connection is not reused
        else:
            self._handle = self._loop.call_at(self.last + self.idle, self._check)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def stream_error_event(upstream: UpstreamResponse, message: str, code: str) -> bytes:
    """An OpenAI-style error as the stream's own framing (an SSE event or an NDJSON line)."""
    error = orjson.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": code}})
    if upstream.content_type == "text/event-stream":
        return b"data: " + error + b"\n\n"
    return error + b"\n"


async def relay(
    request: web.Request,
    upstream: UpstreamResponse,
    *,
    hide_usage_chunks: bool,
    on_usage: UsageCallback,
    idle_timeout: float,
    edit_headers: HeaderEdit | None = None,
    on_first_chunk: Callable[[], None] | None = None,
) -> web.StreamResponse:
    """Copy an upstream answer to the client; report usage; hide the usage chunk the router asked for.
    A request of a translated client API (:mod:`ferry_router.apis`) gets its answer translated.
    ``on_first_chunk`` is called when a streamed answer's first chunk arrives (its first token)."""
    watch = StallWatch(upstream, idle_timeout)
    api = request.get(CLIENT_API)
    try:
        if api is not None:
            return await _relay_translated(request, upstream, watch, api, on_usage, on_first_chunk)
        return await _relay(
            request, upstream, watch, hide_usage_chunks, on_usage, edit_headers, on_first_chunk
        )
    finally:
        watch.cancel()


async def _read_body(upstream: UpstreamResponse, watch: StallWatch) -> bytes:
    try:
        return await upstream.read()
    except (OSError, TimeoutError) as exc:
        if watch.stalled:
            STREAM_ERRORS.labels("idle_timeout").inc()
            raise UpstreamError(f"no body data for {watch.idle:g}s", timeout=True) from exc
        raise UpstreamError(f"body read failed: {exc!r}") from exc


def _stream_failure(watch: StallWatch, exc: BaseException) -> tuple[str, str]:
    """Count a cut stream; the message and code its error event carries."""
    if watch.stalled:
        STREAM_ERRORS.labels("idle_timeout").inc()
        return f"the upstream engine sent nothing for {watch.idle:g}s", "upstream_stream_timeout"
    STREAM_ERRORS.labels("broken").inc()
    return f"the upstream engine broke the stream: {exc!r}", "upstream_stream_broken"


async def _relay(
    request: web.Request,
    upstream: UpstreamResponse,
    watch: StallWatch,
    hide_usage_chunks: bool,
    on_usage: UsageCallback,
    edit_headers: HeaderEdit | None,
    on_first_chunk: Callable[[], None] | None,
) -> web.StreamResponse:
    headers = response_headers(upstream.headers)
    if edit_headers is not None:
        edit_headers(headers)
    if not is_streaming(upstream):
        body = await _read_body(upstream, watch)
        usage = None
        if body[:1] == b"{" and b'"usage"' in body:
            try:
                usage = _usage_of(orjson.loads(body))
            except orjson.JSONDecodeError:
                usage = None
        if usage:
            await on_usage(*usage)
        return web.Response(body=body, status=upstream.status, headers=headers)
    response = stream_response(request, upstream.status, headers)
    await response.prepare(request)
    request[STARTED_RESPONSE] = response  # once bytes are out, this is the only answer there can be
    carry = b""
    try:
        async for chunk in upstream.content.iter_any():
            watch.touch()
            if on_first_chunk is not None:
                on_first_chunk()
                on_first_chunk = None
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data
                continue
            complete, carry = data[:cut], data[cut:]
            if b'"usage"' in complete:
                complete = await _scan_usage(complete, hide_usage_chunks, on_usage)
            if complete:
                await response.write(complete)
    except (OSError, TimeoutError) as exc:
        # the status line already went out: the stream itself must say that it failed
        if carry:
            await response.write(carry + b"\n")
            carry = b""
        message, code = _stream_failure(watch, exc)
        log.warning("upstream stream cut: %s", message)
        await response.write(stream_error_event(upstream, message, code))
    except asyncio.CancelledError:
        # the drain deadline passed while this stream was still going: say so before the cut
        STREAM_ERRORS.labels("shutdown").inc()
        event = stream_error_event(upstream, "the router is shutting down", "router_shutdown")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(response.write(event), 1.0)
        raise
    if carry:
        await response.write(carry)
    await response.write_eof()
    return response


async def _relay_translated(
    request: web.Request,
    upstream: UpstreamResponse,
    watch: StallWatch,
    api: ClientApi,
    on_usage: UsageCallback,
    on_first_chunk: Callable[[], None] | None,
) -> web.StreamResponse:
    """Relay an engine's chat-completions answer as the client API's own answer or event stream."""
    if not is_streaming(upstream):
        body = await _read_body(upstream, watch)
        if upstream.status >= 400:
            return web.Response(
                body=api.upstream_error(upstream.status, body),
                status=upstream.status,
                content_type="application/json",
            )
        try:
            chat = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"the engine's answer is not JSON: {exc}") from exc
        usage = _usage_of(chat) if isinstance(chat, dict) else None
        if usage:
            await on_usage(*usage)
        return web.Response(body=api.answer(chat), status=upstream.status, content_type="application/json")
    response = stream_response(
        request, upstream.status, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    request[STARTED_RESPONSE] = response
    carry = b""
    ended = False
    try:
        async for chunk in upstream.content.iter_any():
            watch.touch()
            if on_first_chunk is not None:
                on_first_chunk()
                on_first_chunk = None
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop()
            out = b""
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    out += api.end()
                    ended = True
                    continue
                try:
                    parsed = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(parsed, dict):
                    continue
                if "error" in parsed:  # the engine reported a failure inside its stream
                    out += api.failed(str((parsed["error"] or {}).get("message", parsed)), "upstream_error")
                    ended = True
                    continue
                usage = _usage_of(parsed)
                if usage:
                    await on_usage(*usage)
                out += api.events(parsed)
            if out:
                await response.write(out)
        if not ended:
            await response.write(api.end())
    except (OSError, TimeoutError) as exc:
        message, code = _stream_failure(watch, exc)
        log.warning("upstream stream cut: %s", message)
        await response.write(api.failed(message, code))
    except asyncio.CancelledError:
        STREAM_ERRORS.labels("shutdown").inc()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                response.write(api.failed("the router is shutting down", "router_shutdown")), 1.0
            )
        raise
    await response.write_eof()
    return response


async def _scan_usage(block: bytes, hide: bool, on_usage: UsageCallback) -> bytes:
    kept: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if line.startswith(b"data:") and b'"usage"' in line:
            payload = line[5:].strip()
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                kept.append(line)
                continue
            usage = _usage_of(chunk) if isinstance(chunk, dict) else None
            if usage:
                await on_usage(*usage)
                if hide and not chunk.get("choices"):
                    continue
        kept.append(line)
    return b"".join(kept)


@dataclass(slots=True)
class Attempt:
    """What the aggregated path needs to call one upstream."""

    client: UpstreamClient
    server: Server
    path_qs: str
    body: bytes
    headers: CIMultiDict[str]
    hide_usage: bool
    retry_on_404: bool
    dest_labels: tuple[str, str, str, str, str]  # active_upstream_requests labels
    edit_headers: HeaderEdit | None = None
    method: str = "POST"  # an HTTPRoute to a Service relays the client's method


async def forward(
    request: web.Request,
    attempt: Attempt,
    candidates: list[Endpoint],
    record: RequestRecord,
    on_usage: UsageCallback,
) -> tuple[web.StreamResponse, Endpoint]:
    """Try candidates in order until one answers; returns the response and the endpoint that served."""
    server = attempt.server
    limit = len(candidates)
    if server.retry_attempts is not None:
        limit = max(1, min(limit, server.retry_attempts + 1))
    last: UpstreamError | None = None
    active = active_upstream(*attempt.dest_labels)
    for index, endpoint in enumerate(candidates[:limit]):
        if index and server.retry_interval:
            await asyncio.sleep(server.retry_interval)
        record.upstream_attempts = index + 1
        endpoint.inflight += 1
        timing = StreamTiming(endpoint)
        active.inc()
        try:
            upstream = await attempt.client.send(
                endpoint_url(server, endpoint, attempt.path_qs),
                attempt.body,
                attempt.headers,
                server.timeout,
                attempt.method,
            )
            try:
                record.upstream_status = upstream.status
                if upstream.status >= 500 or (upstream.status == 404 and attempt.retry_on_404):
                    body = await upstream.read()
                    last = UpstreamError(
                        f"{endpoint.key} answered {upstream.status}", status=upstream.status, body=body
                    )
                    continue
                record.selected_pod = endpoint.name
                response = await relay(
                    request,
                    upstream,
                    hide_usage_chunks=attempt.hide_usage,
                    on_usage=timing.counting(on_usage),
                    idle_timeout=attempt.client.settings.idle_timeout,
                    edit_headers=attempt.edit_headers,
                    on_first_chunk=timing.first_chunk,
                )
                return response, endpoint
            finally:
                upstream.release()
        except UpstreamError as exc:
            last = exc
            log.info("attempt %d of %s on %s failed: %s", index + 1, record.request_id, endpoint.key, exc)
        finally:
            timing.ended()
            endpoint.inflight -= 1
            active.dec()
    raise failure(last, candidates[:limit])


def failure(last: UpstreamError | None, tried: list[Endpoint]) -> errors.RouterError:
    names = ", ".join(e.name for e in tried)
    if last is not None and last.timeout:
        return errors.upstream_timeout(f"every endpoint tried ({names}) timed out")
    if last is not None and last.status == 404:
        return errors.no_model_endpoint(names)
    detail = str(last) if last is not None else "no attempt made"
    return errors.upstream_failed(f"all {len(tried)} endpoints failed ({names}); last: {detail}")
