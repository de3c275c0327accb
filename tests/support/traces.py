"""Spans the services wrote to ``FERRY_TRACE_FILE`` (one JSON object per line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Span = dict[str, Any]


def read_spans(path: Path) -> list[Span]:
    if not path.exists():
        return []
    spans = []
    for line in path.read_text().splitlines():
        try:
            spans.append(json.loads(line))
        except ValueError:
            continue  # a line being written right now
    return spans


def traces_by_id(spans: list[Span]) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = {}
    for span in spans:
        traces.setdefault(span["traceId"], []).append(span)
    return traces
