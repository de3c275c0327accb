"""The lock-free histogram exposes exactly what prometheus_client's Histogram does."""

from __future__ import annotations

from ferry_router.loop_metrics import LoopHistogram
from prometheus_client import CollectorRegistry, Histogram, generate_latest

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def samples(text: bytes) -> list[str]:
    return sorted(line for line in text.decode().splitlines() if line and "_created" not in line)


def test_same_exposition_as_prometheus_client() -> None:
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = LoopHistogram("h_seconds", "doc", ["model", "code"], BUCKETS, registry=ours_registry)
    theirs = Histogram("h_seconds", "doc", ["model", "code"], buckets=BUCKETS, registry=theirs_registry)
    for value in (0.0, 0.005, 0.0051, 0.3, 1.0, 2.0, 61.0, 1e9):
        for metric in (ours, theirs):
            metric.labels("m", "200").observe(value)
    ours.labels("other", "500").observe(0.02)
    theirs.labels("other", "500").observe(0.02)
    assert samples(generate_latest(ours_registry)) == samples(generate_latest(theirs_registry))
