"""One value per metric from a pod's Prometheus exposition (spec §3.2).

Counters and gauges: the sum of every labelled sample. Histograms: the first series as a
:class:`HistogramSnapshot` (the collector turns it into the 95th percentile of the change since its
baseline). Any other type (including an untyped series with no ``# TYPE`` line) is an error for the
whole metric group, as in Kthena.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ferry_autoscaler.algorithm.histogram import HistogramSnapshot


class ExpositionError(ValueError):
    pass


@dataclass(frozen=True)
class Sampled:
    value: float
    histogram: HistogramSnapshot | None = None


def parse_families(text: str) -> dict[str, Metric]:
    try:
        return {family.name: family for family in text_string_to_metric_families(text)}
    except Exception as exc:  # the parser raises ValueError/IndexError/... on malformed input
        raise ExpositionError(f"malformed metrics payload: {exc}") from exc


def _family(families: dict[str, Metric], series: str) -> Metric | None:
    if series in families:
        return families[series]
    if series.endswith("_total"):
        return families.get(series.removesuffix("_total"))
    return None


def _histogram(family: Metric) -> HistogramSnapshot:
    first: frozenset[tuple[str, str]] | None = None
    total, count, buckets = 0.0, 0.0, []
    for sample in family.samples:
        labels = frozenset((k, v) for k, v in sample.labels.items() if k != "le")
        first = labels if first is None else first
        if labels != first:
            continue
        if sample.name.endswith("_bucket"):
            buckets.append((float(sample.labels["le"]), float(sample.value)))
        elif sample.name.endswith("_sum"):
            total = float(sample.value)
        elif sample.name.endswith("_count"):
            count = float(sample.value)
    return HistogramSnapshot.of(total, count, buckets)


def _summed(family: Metric) -> float:
    names = {family.name, f"{family.name}_total"}
    values: Iterable[float] = (
        float(s.value) for s in family.samples if s.name in names and s.value is not None
    )
    return math.fsum(v for v in values if not math.isnan(v))


def extract(families: dict[str, Metric], series: str) -> Sampled | None:
    """The value of ``series`` in one pod; ``None`` when the pod does not expose it."""
    family = _family(families, series)
    if family is None:
        return None
    if family.type in ("counter", "gauge"):
        return Sampled(_summed(family))
    if family.type == "histogram":
        return Sampled(1.0, _histogram(family))
    raise ExpositionError(f"metric {series} has unsupported type {family.type!r}")
