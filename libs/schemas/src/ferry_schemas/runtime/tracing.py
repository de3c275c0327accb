"""OpenTelemetry setup: the OTLP exporter when ``OTEL_*`` says so, otherwise no export.

The exporter follows the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_TRACES_EXPORTER``, ``OTEL_SERVICE_NAME``...). ``FERRY_TRACE_FILE`` additionally writes
every finished span as one JSON line to a file, which is how the tests and the demo collect the
spans of several processes without a collector.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF


class JsonLinesSpanExporter(SpanExporter):
    """Appends spans as JSON lines (trace id, span id, parent, name, service, times, attributes)."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the process

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                ctx = span.get_span_context()
                parent = span.parent
                record = {
                    "traceId": format(ctx.trace_id, "032x") if ctx else "",
                    "spanId": format(ctx.span_id, "016x") if ctx else "",
                    "parentSpanId": format(parent.span_id, "016x") if parent else "",
                    "name": span.name,
                    "kind": span.kind.name,
                    "service": span.resource.attributes.get("service.name", ""),
                    "start": span.start_time,
                    "end": span.end_time,
                    "status": span.status.status_code.name,
                    "attributes": {k: _jsonable(v) for k, v in (span.attributes or {}).items()},
                }
                self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def _jsonable(value: object) -> object:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def setup_tracing(service: str) -> TracerProvider:
    """Install the process-wide tracer provider for ``service`` and return it.

    Without an exporter nothing is recorded (sampler ``ALWAYS_OFF``): spans are non-recording but
    still get trace and span ids, so the ``traceparent`` still travels through the pipeline and log
    lines still carry ``trace_id``; what is saved is building, filling and ending span objects
    nobody reads (5-9 % of the applier's and the status service's CPU in a burst of boosters).
    """
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "")
    otlp = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or (exporter_name == "otlp")
    )
    path = os.environ.get("FERRY_TRACE_FILE")
    provider = TracerProvider(resource=resource, sampler=None if otlp or path else ALWAYS_OFF)
    if otlp:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if path:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    trace.set_tracer_provider(provider)
    return provider
