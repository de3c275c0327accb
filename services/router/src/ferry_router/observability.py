"""Metrics under Kthena's ``kthena_router_*`` names (spec §14.2), the access log (§14.1) and tracing.

Label values are bounded: ``model`` is ``unknown`` for names no route knows and ``path`` is
``other`` for paths outside :data:`KNOWN_PATHS` (Kthena uses the raw path, an unbounded label).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Generic, TypeVar

import orjson
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind
from prometheus_client import Counter, Gauge
from prometheus_client.metrics import MetricWrapperBase

from ferry_router.loop_metrics import LoopHistogram

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DEST = ["model_route", "backend_type", "backend_name", "upstream_model"]
KNOWN_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/responses",
        "/v1/embeddings",
        "/v1/messages",
    }
)

REQUESTS = Counter(
    "kthena_router_requests_total", "Requests handled.", ["model", "path", "status_code", "error_type", *DEST]
)
DURATION = LoopHistogram(
    "kthena_router_request_duration_seconds",
    "Request duration.",
    ["model", "path", "status_code", *DEST],
    buckets=DURATION_BUCKETS,
)
PREFILL_DURATION = LoopHistogram(
    "kthena_router_request_prefill_duration_seconds",
    "Prefill phase duration (PD).",
    ["model", "path", "status_code"],
    buckets=DURATION_BUCKETS,
)
DECODE_DURATION = LoopHistogram(
    "kthena_router_request_decode_duration_seconds",
    "Decode phase duration (PD).",
    ["model", "path", "status_code"],
    buckets=DURATION_BUCKETS,
)
TOKENS = Counter("kthena_router_tokens_total", "Tokens processed.", ["model", "path", "token_type", *DEST])
RATE_LIMITED = Counter(
    "kthena_router_rate_limit_exceeded_total",
    "Requests refused by a rate limit.",
    ["model", "limit_type", "path"],
)
ACTIVE = Gauge("kthena_router_active_requests", "Requests being handled.")
ACTIVE_DOWNSTREAM = Gauge("kthena_router_active_downstream_requests", "Client requests in flight.", ["model"])
ACTIVE_UPSTREAM = Gauge(
    "kthena_router_active_upstream_requests",
    "Upstream requests in flight.",
    ["model_server", "model_route", "backend_type", "backend_name", "upstream_model"],
)
TARGET_FALLBACKS = Counter(
    "ferry_router_target_fallbacks_total",
    "Requests sent to another target of the matched rule because the drawn one could not serve "
    "(a ModelServer without ready endpoints, an ExternalModelProvider missing or without its credential).",
    ["route"],
)
STREAM_ERRORS = Counter(
    "ferry_router_upstream_stream_errors_total",
    "Upstream bodies cut after the answer began: idle_timeout (nothing for FERRY_ROUTER_IDLE_TIMEOUT), "
    "broken (the engine closed the connection) or shutdown (still going at the drain deadline).",
    ["reason"],
)
POOL_IN_USE = Gauge("ferry_router_upstream_connections_in_use", "Upstream connections carrying a request.")
POOL_IDLE = Gauge("ferry_router_upstream_connections_idle", "Idle keep-alive upstream connections.")

tracer = trace.get_tracer("ferry_router")

M = TypeVar("M", bound=MetricWrapperBase)


class Labelled(Generic[M]):
    """``metric.labels(...)`` with the children cached (the label sets here are bounded)."""

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


requests_total = Labelled(REQUESTS)
tokens_total = Labelled(TOKENS)
active_downstream = Labelled(ACTIVE_DOWNSTREAM)
active_upstream = Labelled(ACTIVE_UPSTREAM)


class Tracing:
    """Spans are made only when something exports them (OTLP or ``FERRY_TRACE_FILE``).

    With no exporter the router creates no spans at all (they would cost ~15 % of a request's
    CPU for nothing) and the client's own ``traceparent`` header travels upstream unchanged.
    """

    enabled: bool = False

    @staticmethod
    def configured() -> bool:
        return bool(
            os.environ.get("FERRY_TRACE_FILE")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_TRACES_EXPORTER") == "otlp"
        )


_NO_SPAN = contextlib.nullcontext()


def child_span(
    name: str, attributes: dict[str, str] | None = None, kind: SpanKind = SpanKind.INTERNAL
) -> contextlib.AbstractContextManager[Span | None]:
    """A child of the current span, or nothing when tracing is off."""
    if not Tracing.enabled:
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=attributes, kind=kind)


def inject_context(headers: MutableMapping[str, str]) -> None:
    """Put the current span's ``traceparent`` (and baggage) into upstream headers."""
    if Tracing.enabled:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        headers.update(carrier)


def _ms(start: float, end: float) -> int:
    return max(int((end - start) * 1000), 0)


def path_label(path: str) -> str:
    return path if path in KNOWN_PATHS else "other"


@dataclass(slots=True)
class RequestRecord:
    """Everything one request leaves in metrics and in the access log."""

    method: str
    path: str
    protocol: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)
    status: int = 0
    error_type: str = ""
    error_message: str = ""
    model: str = ""
    metrics_model: str = "unknown"
    model_route: str = ""
    model_server: str = ""
    external_provider: str = ""  # namespace/name when an ExternalModelProvider served
    selected_pod: str = ""
    upstream_model: str = ""
    upstream_status: int = 0
    upstream_attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    user: str = ""  # the JWT subject when authentication is on (rate limits, fairness)
    gateway: str = ""  # gateway mode: the Gateway (ns/name) whose listener took the request
    http_route: str = ""
    inference_pool: str = ""
    t_processed: float | None = None  # request processing done (parse, route, estimate)
    t_upstream_start: float | None = None
    t_upstream_end: float | None = None

    def labels(self) -> tuple[str, str, str, str]:
        backend = self.model_server or self.external_provider
        kind = "model_server" if self.model_server else "external_provider"
        return (
            self.model_route or "none",
            kind if backend else "unresolved",
            backend or "none",
            self.upstream_model or "none",
        )

    def finish_reason(self) -> str:
        if self.error_type:
            return self.error_type
        return "request_failed" if self.status >= 400 else "successful_request"

    def record_metrics(self) -> None:
        path = path_label(self.path)
        dest = self.labels()
        status = str(self.status)
        requests_total(self.metrics_model, path, status, self.finish_reason(), *dest).inc()
        DURATION.labels(self.metrics_model, path, status, *dest).observe(time.perf_counter() - self.started)
        if self.input_tokens:
            tokens_total(self.metrics_model, path, "input", *dest).inc(self.input_tokens)
        if self.output_tokens:
            tokens_total(self.metrics_model, path, "output", *dest).inc(self.output_tokens)

    def durations_ms(self) -> tuple[int, int, int, int]:
        end = time.perf_counter()
        processed = self.t_processed or self.t_upstream_start or end
        up_start = self.t_upstream_start or processed
        up_end = self.t_upstream_end or end
        return _ms(self.started, end), _ms(self.started, processed), _ms(up_start, up_end), _ms(up_end, end)

    def as_dict(self) -> dict[str, Any]:
        total, req, up, resp = self.durations_ms()
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(self.started_wall, UTC).isoformat(timespec="microseconds"),
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "status_code": self.status,
        }
        if self.error_type:
            entry["error"] = {"type": self.error_type, "message": self.error_message}
        entry["model_name"] = self.model
        optional = {
            "model_route": self.model_route,
            "model_server": self.model_server,
            "selected_pod": self.selected_pod,
            "request_id": self.request_id,
            "backend_type": "model_server" if self.model_server else "",
            "backend_name": self.model_server,
            "upstream_model": self.upstream_model,
            "upstream_status_code": self.upstream_status,
            "upstream_attempts": self.upstream_attempts,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "user": self.user,
            "gateway": self.gateway,
            "http_route": self.http_route,
            "inference_pool": self.inference_pool,
        }
        entry.update({k: v for k, v in optional.items() if v})
        entry.update(
            duration_total=total,
            duration_request_processing=req,
            duration_upstream_processing=up,
            duration_response_processing=resp,
        )
        return entry

    def as_text(self) -> str:
        total, req, up, resp = self.durations_ms()
        stamp = datetime.fromtimestamp(self.started_wall, UTC).isoformat(timespec="microseconds")
        parts = [f'[{stamp}] "{self.method} {self.path} {self.protocol}" {self.status}']
        if self.error_type:
            parts.append(f"error={self.error_type}:{self.error_message}")
        for key, value in (
            ("model_name", self.model),
            ("model_route", self.model_route),
            ("model_server", self.model_server),
            ("selected_pod", self.selected_pod),
            ("request_id", self.request_id),
            ("backend_type", "model_server" if self.model_server else ""),
            ("backend_name", self.model_server),
            ("upstream_model", self.upstream_model),
            ("upstream_status_code", self.upstream_status or ""),
            ("upstream_attempts", self.upstream_attempts or ""),
            ("user", self.user),
            ("gateway", self.gateway),
            ("http_route", self.http_route),
            ("inference_pool", self.inference_pool),
        ):
            if value:
                parts.append(f"{key}={value}")
        if self.input_tokens or self.output_tokens:
            parts.append(f"tokens={self.input_tokens}/{self.output_tokens}")
        parts.append(f"timings={total}ms({req}+{up}+{resp})")
        return " ".join(parts)


class AccessLog:
    """One access-log line per ``/v1/*`` request (``ACCESS_LOG_ENABLED``/``_FORMAT``/``_OUTPUT``)."""

    def __init__(self, enabled: bool = True, fmt: str = "text", output: str = "stdout") -> None:
        self.enabled = enabled
        self.json = fmt == "json"
        self._flush_pending = False
        self._stream: IO[str]
        if output == "stdout":
            self._stream = sys.stdout
        elif output == "stderr":
            self._stream = sys.stderr
        else:
            self._stream = open(output, "a", encoding="utf-8")  # noqa: SIM115 - kept for the process

    @classmethod
    def from_env(cls) -> AccessLog:
        enabled = os.environ.get("ACCESS_LOG_ENABLED", "true").strip().lower() not in (
            "0",
            "false",
            "no",
            "off",
        )
        fmt = os.environ.get("ACCESS_LOG_FORMAT", "text").strip().lower()
        return cls(
            enabled, fmt if fmt in ("text", "json") else "text", os.environ.get("ACCESS_LOG_OUTPUT", "stdout")
        )

    def write(
        self, record: RequestRecord, loop: asyncio.AbstractEventLoop | None = None, *, now: bool = False
    ) -> None:
        """Buffer the line; flush once per event-loop turn (one syscall for a burst of requests), or
        at once with ``now``. ``loop``: the running loop, when the caller has it (finding it is a
        getpid before Python 3.12)."""
        if not self.enabled:
            return
        line = orjson.dumps(record.as_dict()).decode() if self.json else record.as_text()
        self._stream.write(line + "\n")
        if now:
            self._stream.flush()
        elif not self._flush_pending:
            try:
                (loop or asyncio.get_running_loop()).call_soon(self.flush)
                self._flush_pending = True
            except RuntimeError:  # no loop: write through
                self._stream.flush()

    def flush(self) -> None:
        self._flush_pending = False
        self._stream.flush()
