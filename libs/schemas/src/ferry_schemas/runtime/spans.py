"""Reading the JSON-lines span file the services write (``FERRY_TRACE_FILE``): traces and their trees.

Used by the demo, the tests and ``ferry describe model`` (the last reconcile trace).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

Span = dict[str, Any]
RECONCILE_SERVICES = frozenset({"ferry-watcher", "ferry-converter", "ferry-applier", "ferry-status"})


def read_spans(path: Path) -> list[Span]:
    """Every span in the file; a line still being written is skipped."""
    if not path.exists():
        return []
    spans = []
    for line in path.read_text().splitlines():
        try:
            spans.append(json.loads(line))
        except ValueError:
            continue
    return spans


def traces_by_id(spans: list[Span]) -> dict[str, list[Span]]:
    grouped: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        grouped[span["traceId"]].append(span)
    return dict(grouped)


def services_of(trace: list[Span]) -> set[str]:
    return {str(span.get("service", "")) for span in trace}


def reconcile_traces(spans: list[Span], *, contains: str = "") -> list[list[Span]]:
    """Traces holding spans of all four reconcile services (optionally mentioning ``contains``)."""
    found = []
    for trace in traces_by_id(spans).values():
        if services_of(trace) >= RECONCILE_SERVICES and (not contains or contains in json.dumps(trace)):
            found.append(trace)
    return found


def render_tree(trace: list[Span]) -> str:
    """An indented span tree: ``service  name  (duration ms)``."""
    by_parent: dict[str, list[Span]] = defaultdict(list)
    ids = {span["spanId"] for span in trace}
    for span in sorted(trace, key=lambda s: s.get("start") or 0):
        parent = span.get("parentSpanId") or ""
        by_parent[parent if parent in ids else ""].append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in by_parent.get(parent, []):
            duration = ((span.get("end") or 0) - (span.get("start") or 0)) / 1e6
            lines.append(f"{'  ' * depth}{span.get('service', '?'):16} {span['name']}  ({duration:.1f} ms)")
            walk(span["spanId"], depth + 1)

    walk("", 0)
    return "\n".join(lines)
