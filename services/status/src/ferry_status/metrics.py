"""Prometheus metrics of the status service (dead letters are counted by the shared forwarder)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HANDLED = Counter("ferry_status_messages_handled_total", "Messages handled and acked.", ["consumer"])
FAILURES = Counter("ferry_status_failures_total", "Messages whose handling failed (nacked).", ["consumer"])
HANDLE_LATENCY = Histogram(
    "ferry_status_handle_seconds", "Time from fetching a message to acking it.", ["consumer"]
)
RECONCILE_LATENCY = Histogram("ferry_status_reconcile_seconds", "One status reconcile.", ["kind"])
STATUS_WRITES = Counter("ferry_status_writes_total", "Status subresource writes.", ["kind"])
STATUS_UNCHANGED = Counter(
    "ferry_status_unchanged_total", "Reconciles that found the status already right.", ["kind"]
)
