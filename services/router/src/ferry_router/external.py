"""Requests whose ModelRoute target is an ExternalModelProvider (spec §16).

The request goes to ``baseURL`` + the request path (an OpenAI ``baseURL`` with a path, such as
``https://api.openai.com/v1``, absorbs the path's leading ``/v1``), query kept, with an allow-list
of client headers, the provider's static headers and its API key (``Authorization: Bearer`` or
``x-api-key``). The client's raw body is forwarded unless ``spec.model`` renames the model or the
router has to ask a streaming OpenAI endpoint for usage. Answers, non-2xx included, are relayed
as they are; a transport error is 502, a timeout 504. One attempt: a provider is one endpoint.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ferry_router import errors
from ferry_router.observability import RequestRecord
from ferry_router.proxy import UpstreamClient, UpstreamError, UsageCallback, inject_usage, relay
from ferry_router.state.providers import Provider, ProviderTable

PROVIDER_PATHS: dict[str, frozenset[str]] = {
    "OpenAI": frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"}),
    "Anthropic": frozenset({"/v1/messages"}),
}
FORWARDED_HEADERS = (
    "Content-Type",
    "Accept",
    "X-Request-Id",
    "Traceparent",
    "Tracestate",
    "Baggage",
    "X-B3-Traceid",
    "X-B3-Spanid",
    "X-B3-Parentspanid",
    "X-B3-Sampled",
    "X-B3-Flags",
)
ANTHROPIC_HEADERS = ("Anthropic-Version", "Anthropic-Beta")


def provider_url(provider: Provider, path: str, query: str) -> str:
    """``baseURL`` + path (+ ``?query``), dropping the path's ``/v1`` where the base already has it."""
    absorb = provider.base_url.endswith("/v1") if provider.provider_type == "Anthropic" else provider.has_path
    if absorb and path.startswith("/v1/"):
        path = path[len("/v1") :]
    return provider.base_url + path + (f"?{query}" if query else "")


def provider_headers(
    provider: Provider, client: CIMultiDictProxy[str], request_id: str, api_key: str
) -> CIMultiDict[str]:
    """Allow-listed client headers, then static headers, a default content type, then auth."""
    out: CIMultiDict[str] = CIMultiDict()
    names = FORWARDED_HEADERS + (ANTHROPIC_HEADERS if provider.provider_type == "Anthropic" else ())
    for name in names:
        for value in client.getall(name, ()):
            out.add(name, value)
    out["X-Request-Id"] = request_id
    for name, value in provider.headers:
        out[name] = value
    out.setdefault("Content-Type", "application/json")
    if provider.auth_scheme == "Bearer":
        out["Authorization"] = f"Bearer {api_key}"
    elif provider.auth_scheme == "APIKey":
        out["x-api-key"] = api_key
    return out


class ExternalProxy:
    """Sends requests to external providers, through the router's pool (or an unverified-TLS one)."""

    def __init__(self, providers: ProviderTable, client: UpstreamClient) -> None:
        self.providers = providers
        self.client = client
        self._insecure: UpstreamClient | None = None

    async def _client_for(self, provider: Provider) -> UpstreamClient:
        if not provider.insecure:
            return self.client
        if self._insecure is None:
            self._insecure = UpstreamClient(replace(self.client.settings, verify_tls=False))
            await self._insecure.start()
        return self._insecure

    async def close(self) -> None:
        if self._insecure is not None:
            await self._insecure.close()

    async def serve(
        self,
        request: web.Request,
        record: RequestRecord,
        body: dict[str, Any],
        key: str,
        on_usage: UsageCallback,
    ) -> web.StreamResponse:
        provider = self.providers.providers.get(key)
        if provider is None:
            raise errors.provider_missing(key)
        api_key = self.providers.api_key(provider)
        if api_key is None:
            raise errors.provider_not_ready(key)
        if request.path not in PROVIDER_PATHS.get(provider.provider_type, frozenset()):
            raise errors.provider_path(provider.provider_type, request.path)
        record.external_provider = key
        changed = False
        if provider.model is not None and body.get("model") != provider.model:
            body["model"] = provider.model
            changed = True
        record.upstream_model = str(body.get("model"))
        hide_usage = False
        if provider.provider_type == "OpenAI" and request.path != "/v1/responses":
            hide_usage = inject_usage(body)
        payload = orjson.dumps(body) if changed or hide_usage else await request.read()
        url = provider_url(provider, request.path, request.query_string)
        headers = provider_headers(provider, request.headers, record.request_id, api_key)
        client = await self._client_for(provider)
        try:
            upstream = await client.send(url, payload, headers, None)
        except UpstreamError as exc:
            raise _failure(key, exc) from exc
        try:
            record.upstream_status = upstream.status
            record.selected_pod = key
            return await relay(
                request,
                upstream,
                hide_usage_chunks=hide_usage,
                on_usage=on_usage,
                idle_timeout=client.settings.idle_timeout,
            )
        except UpstreamError as exc:
            raise _failure(key, exc) from exc
        finally:
            upstream.release()


def _failure(key: str, exc: UpstreamError) -> errors.RouterError:
    """502, or 504 when the provider timed out (no retry: a provider is one endpoint)."""
    if exc.timeout:
        return errors.upstream_timeout(f"external provider {key}: {exc}")
    return errors.upstream_failed(f"external provider {key}: {exc}")
