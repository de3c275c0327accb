"""Prometheus metrics of the applier (dead letters are counted by the shared DeadLetterForwarder)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES = Counter(
    "ferry_applier_messages_total",
    "Messages handled by the applier, by consumer and outcome (ok, failed, stale, retried, skipped...).",
    ["consumer", "outcome"],
)
FAILURES = Counter(
    "ferry_applier_failures_total",
    "Reconcile failures, by consumer and kind (transient, permanent, error).",
    ["consumer", "kind"],
)
RECONCILE_SECONDS = Histogram(
    "ferry_applier_reconcile_seconds",
    "Time of one reconcile, from message received to ack/nack.",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
