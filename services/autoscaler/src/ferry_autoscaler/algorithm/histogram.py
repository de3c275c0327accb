"""Quantiles of the difference between two cumulative histograms (spec §3.5; ``histogram.go``)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field


class HistogramError(ValueError):
    pass


@dataclass(frozen=True)
class HistogramSnapshot:
    sum: float = 0.0
    count: float = 0.0
    buckets: list[tuple[float, float]] = field(default_factory=list)
    """``(upper bound, cumulative count)``, ``+Inf`` included."""

    @classmethod
    def of(cls, total: float, count: float, buckets: list[tuple[float, float]]) -> HistogramSnapshot:
        return cls(total, count, sorted(buckets, key=lambda b: b[0]))


def quantile(percentile: float, now: HistogramSnapshot, past: HistogramSnapshot | None = None) -> float:
    """The ``percentile`` (0-100) of the observations made between ``past`` and ``now``."""
    past = past or HistogramSnapshot()
    count_diff = now.count - past.count
    if count_diff < 0:
        raise HistogramError(f"invalid totalCountDiff ({count_diff:g} = {now.count:g} - {past.count:g})")
    if count_diff == 0:
        return 0.0
    if past.buckets and len(past.buckets) != len(now.buckets):
        raise HistogramError(f"unmatched buckets lengths ({len(now.buckets)} vs {len(past.buckets)})")
    diffs = [
        (bound, cumulative - (past.buckets[index][1] if past.buckets else 0.0))
        for index, (bound, cumulative) in enumerate(now.buckets)
    ]
    for (_, before), (bound, after) in itertools.pairwise(diffs):
        if after < before:
            raise HistogramError(f"non-decreasing is broken at bucket le={bound:g}")
    rank = math.ceil(count_diff * percentile / 100)
    previous_bound, previous_count = 0.0, 0.0
    for bound, diff in diffs:
        upper = 2 * previous_bound if math.isinf(bound) else bound
        if diff >= rank:
            span = diff - previous_count
            share = (rank - previous_count) / span if span else 1.0
            return previous_bound + (upper - previous_bound) * share
        previous_bound, previous_count = upper, diff
    return previous_bound
