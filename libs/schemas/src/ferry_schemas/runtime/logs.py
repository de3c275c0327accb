"""Structured logs: one JSON object per line, with the active trace and span ids (design rule 7).

On a terminal the same records read as plain lines (``FERRY_LOG_FORMAT=json|text`` forces either).
Each JSON line holds ``time`` (RFC 3339, UTC), ``level``, ``service``, ``logger``, ``message``, the
``trace_id``/``span_id`` of the span active when the record was made, ``exception`` when there is one,
and any ``extra={...}`` fields the call passed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

FORMAT_ENV = "FERRY_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _ids() -> dict[str, str]:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            **_ids(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The terminal form: the usual line, with ``trace=<id>`` appended while a span is active."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = _ids()
        return f"{text} trace={ids['trace_id']}" if ids else text


def configure_logging(level: str, service: str, stream: TextIO | None = None) -> None:
    """Send every record to ``stream`` (stderr) as JSON, or as text when it is a terminal."""
    stream = stream or sys.stderr
    wanted = os.environ.get(FORMAT_ENV, "").lower()
    as_json = wanted == "json" or (wanted != "text" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service) if as_json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
