"""What every PD connector shares: the body rewrites, the two upstream phases and the pair loop.

Prefill gets the request without ``stream``/``stream_options`` and with ``max_tokens`` (and
``max_completion_tokens`` when present) set to 1; its answer must be 2xx. Decode gets the
original request plus usage injection and its answer is relayed like the aggregated path's
(hop-by-hop headers filtered, streaming decided by the response content type). Pairs are tried
best first; the next pair is tried only while nothing has been written to the client.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry.trace import SpanKind

from ferry_router import errors
from ferry_router.loop_metrics import LoopHistogram
from ferry_router.observability import (
    DECODE_DURATION,
    PREFILL_DURATION,
    RequestRecord,
    active_upstream,
    child_span,
    inject_context,
)
from ferry_router.proxy import UpstreamClient, UpstreamError, UsageCallback, endpoint_url, inject_usage, relay
from ferry_router.scheduler.framework import PDPair
from ferry_router.state.resources import Server
from ferry_router.state.table import Endpoint
from ferry_router.upstream import UpstreamResponse

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PDCall:
    request: web.Request
    client: UpstreamClient
    server: Server
    path_qs: str
    body: dict[str, Any]
    headers: CIMultiDict[str]
    record: RequestRecord
    on_usage: UsageCallback
    path_label: str
    dest_labels: tuple[str, str, str, str, str]
    response: web.StreamResponse | None = field(default=None)

    def prefill_body(self) -> dict[str, Any]:
        body = copy.deepcopy(self.body)
        body.pop("stream", None)
        body.pop("stream_options", None)
        body["max_tokens"] = 1
        if "max_completion_tokens" in body:
            body["max_completion_tokens"] = 1
        return body

    def decode_body(self) -> tuple[dict[str, Any], bool]:
        body = copy.deepcopy(self.body)
        injected = inject_usage(body)
        return body, injected

    @asynccontextmanager
    async def _upstream(
        self, phase: str, endpoint: Endpoint, body: dict[str, Any], duration: LoopHistogram
    ) -> AsyncIterator[tuple[UpstreamResponse, _Outcome]]:
        """One phase's upstream call: in-flight and active counts, a child span, the response
        released afterwards, connection errors as :class:`UpstreamError`, the phase's duration."""
        started = time.perf_counter()
        outcome = _Outcome()
        endpoint.inflight += 1
        active = active_upstream(*self.dest_labels)
        active.inc()
        try:
            with child_span(phase, {"ferry.endpoint": endpoint.key}, SpanKind.CLIENT):
                url = endpoint_url(self.server, endpoint, self.path_qs)
                upstream = await self.client.send(
                    url, orjson.dumps(body), _traced(self.headers), self.server.timeout
                )
                try:
                    yield upstream, outcome
                finally:
                    upstream.release()
        except OSError as exc:
            raise UpstreamError(f"{phase} on {endpoint.key}: {exc!r}") from exc
        finally:
            endpoint.inflight -= 1
            active.dec()
            duration.labels(self.record.metrics_model, self.path_label, outcome.status).observe(
                time.perf_counter() - started
            )

    async def prefill(self, endpoint: Endpoint, body: dict[str, Any]) -> bytes:
        """Run the prefill phase; returns the (2xx) response body."""
        async with self._upstream("prefill", endpoint, body, PREFILL_DURATION) as (upstream, outcome):
            data = await upstream.read()
            if not 200 <= upstream.status < 300:
                raise UpstreamError(
                    f"prefill on {endpoint.key} answered {upstream.status}", status=upstream.status
                )
            outcome.status = "200"
            return data

    async def decode(self, endpoint: Endpoint, body: dict[str, Any], injected: bool) -> web.StreamResponse:
        async with self._upstream("decode", endpoint, body, DECODE_DURATION) as (upstream, outcome):
            self.record.upstream_status = upstream.status
            if not 200 <= upstream.status < 300:
                raise UpstreamError(
                    f"decode on {endpoint.key} answered {upstream.status}", status=upstream.status
                )
            self.record.selected_pod = endpoint.name
            response = await relay(
                self.request,
                upstream,
                hide_usage_chunks=injected,
                on_usage=self.on_usage,
                idle_timeout=self.client.settings.idle_timeout,
            )
            self.response = response
            outcome.status = "200"
            return response


@dataclass
class _Outcome:
    """The status label a phase's duration is recorded with (``500`` unless it succeeded)."""

    status: str = "500"


def _traced(headers: CIMultiDict[str]) -> CIMultiDict[str]:
    out = CIMultiDict(headers)
    inject_context(out)
    return out


class Connector(Protocol):
    name: str

    async def run(self, call: PDCall, pair: PDPair) -> web.StreamResponse: ...


def connector_for(name: str) -> Connector:
    from ferry_router.pd.http import HTTPConnector
    from ferry_router.pd.nixl import NIXLConnector
    from ferry_router.pd.sglang import SGLangConnector

    if name in ("nixl", "mooncake"):
        return NIXLConnector(name)
    if name == "sglang":
        return SGLangConnector()
    return HTTPConnector(name if name == "lmcache" else "http")


async def run_pairs(
    call: PDCall, connector: Connector, pairs: list[PDPair], on_served: Callable[[PDPair], None]
) -> web.StreamResponse:
    last: UpstreamError | None = None
    for index, pair in enumerate(pairs):
        call.record.upstream_attempts = index + 1
        try:
            response = await connector.run(call, pair)
            on_served(pair)
            return response
        except UpstreamError as exc:
            last = exc
            log.info("PD pair %s/%s failed: %s", pair.prefill.key, pair.decode.key, exc)
            if call.response is not None and call.response.prepared:
                # bytes already reached the client: a retry would concatenate two answers
                raise errors.upstream_failed(f"after the answer started: {exc}") from exc
    detail = str(last) if last is not None else "no pair"
    if last is not None and last.timeout:
        raise errors.upstream_timeout(f"every prefill/decode pair timed out; last: {detail}")
    raise errors.upstream_failed(f"all {len(pairs)} prefill/decode pairs failed; last: {detail}")
