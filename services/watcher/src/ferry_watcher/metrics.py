"""Prometheus metrics of the watcher."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PUBLISHED = Counter(
    "ferry_watcher_events_published_total",
    "Object events published on FERRY_OBJECTS (duplicates excluded).",
    ["resource", "type"],
)
EVENTS_DUPLICATE = Counter(
    "ferry_watcher_events_duplicate_total",
    "Object events the stream already had (another watcher published them first).",
    ["resource"],
)
EVENTS_SKIPPED = Counter(
    "ferry_watcher_events_skipped_total",
    "Relisted objects not re-published because the stream already holds that resourceVersion.",
    ["resource"],
)
EVENTS_FILTERED = Counter(
    "ferry_watcher_events_filtered_total",
    "Listed or watched objects not published because nothing in Ferry selects them (pods).",
    ["resource"],
)
RESELECTS = Counter(
    "ferry_watcher_pod_reselects_total",
    "Filtered pod lists run because a ModelServer's selector appeared, changed or went away.",
)
PUBLISH_FAILURES = Counter(
    "ferry_watcher_publish_failures_total", "Publishes that failed and were retried.", ["resource"]
)
RELISTS = Counter("ferry_watcher_relists_total", "Full relists, by reason.", ["resource", "reason"])
WATCH_ERRORS = Counter("ferry_watcher_watch_errors_total", "Watch connections that failed.", ["resource"])
OBJECTS = Gauge("ferry_watcher_objects", "Objects currently known per resource.", ["resource"])
PUBLISH_LATENCY = Histogram(
    "ferry_watcher_publish_seconds", "Time from receiving a change to the stream's ack.", ["resource"]
)
