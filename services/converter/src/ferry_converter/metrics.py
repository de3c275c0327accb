"""Prometheus metrics of the converter."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CONVERSIONS = Counter(
    "ferry_converter_conversions_total",
    "Owner events converted into desired sets, by owner resource and outcome "
    "(ok, failed, deleted, stale, unchanged).",
    ["resource", "outcome"],
)
CONVERSION_SECONDS = Histogram(
    "ferry_converter_conversion_seconds",
    "Time to convert one owner object (the pure function only).",
    ["resource"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
PUBLISH_DUPLICATES = Counter(
    "ferry_converter_duplicate_publishes_total",
    "Desired sets the server deduplicated by Nats-Msg-Id (redelivered or duplicated input).",
    ["resource"],
)
