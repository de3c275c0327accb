"""A Prometheus histogram without locks, for code that runs on one event loop.

``prometheus_client.Histogram.observe`` takes a lock and updates two values per call; the router
observes several histograms per request (request duration, one per scheduler plugin, prefix-cache
match ratio), which added up to a measurable share of a request's CPU. Observations and scrapes
here happen on the same event loop (the metrics listener is served by it), so plain counters are
consistent. The exposition is the standard one (``_bucket{le=...}``, ``_sum``, ``_count``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import HistogramMetricFamily, Metric


def _go_float(value: float) -> str:
    """``le`` label text as prometheus_client writes it (``0.005``, ``1.0``, ``30.0``)."""
    return repr(float(value))


class LoopHistogramChild:
    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.total += value


class LoopHistogram:
    """``labels(*values).observe(v)`` like ``prometheus_client.Histogram``; registered on creation."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._bounds = tuple(sorted(float(b) for b in buckets if b != float("inf")))
        self._children: dict[tuple[str, ...], LoopHistogramChild] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> LoopHistogramChild:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values!r}")
            child = self._children[values] = LoopHistogramChild(self._bounds)
        return child

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        les = [_go_float(b) for b in self._bounds] + ["+Inf"]
        for values, child in list(self._children.items()):
            running, buckets = 0, []
            for le, count in zip(les, child.counts, strict=True):
                running += count
                buckets.append((le, float(running)))
            family.add_metric(list(values), buckets, child.total)
        return [family]
