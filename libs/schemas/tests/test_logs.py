"""Structured logs: JSON lines with trace and span ids off a terminal, plain text on one."""

from __future__ import annotations

import io
import json
import logging

import pytest
from ferry_schemas.runtime.logs import configure_logging
from opentelemetry.sdk.trace import TracerProvider


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_active_trace_and_span(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRY_LOG_FORMAT", raising=False)
    out = io.StringIO()
    configure_logging("info", "ferry-test", out)
    log = logging.getLogger("ferry_test")
    log.info("outside %s", "a span")
    with TracerProvider().get_tracer("t").start_as_current_span("reconcile") as span:
        log.warning("inside", extra={"owner": "ns/a"})
        ids = span.get_span_context()
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert "trace_id" not in first
    assert (first["message"], first["service"], first["level"], first["logger"]) == (
        "outside a span",
        "ferry-test",
        "INFO",
        "ferry_test",
    )
    assert second["trace_id"] == format(ids.trace_id, "032x")
    assert second["span_id"] == format(ids.span_id, "016x")
    assert second["owner"] == "ns/a"
    assert "ValueError: boom" in third["exception"]


def test_a_terminal_gets_readable_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRY_LOG_FORMAT", raising=False)
    out = Terminal()
    configure_logging("info", "ferry-test", out)
    logging.getLogger("ferry_test").info("hello")
    assert out.getvalue().rstrip().endswith("INFO ferry_test hello")
    monkeypatch.setenv("FERRY_LOG_FORMAT", "json")
    forced = Terminal()
    configure_logging("info", "ferry-test", forced)
    logging.getLogger("ferry_test").info("hello")
    assert json.loads(forced.getvalue())["message"] == "hello"
