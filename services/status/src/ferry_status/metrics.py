"""Prometheus metrics of the status service (messages, queue and dead letters are counted by the runtime)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILE_LATENCY = Histogram("ferry_status_reconcile_seconds", "One status reconcile.", ["kind"])
STATUS_WRITES = Counter("ferry_status_writes_total", "Status subresource writes.", ["kind"])
STATUS_UNCHANGED = Counter(
    "ferry_status_unchanged_total", "Reconciles that found the status already right.", ["kind"]
)
STATUS_HELD = Counter(
    "ferry_status_held_total",
    "Decisions (a reconcile's, or a change's heard while held) to keep a new object's first status waiting.",
    ["kind"],
)
