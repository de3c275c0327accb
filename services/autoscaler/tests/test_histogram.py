"""Spec §7.5: ``histogram_test.go``."""

from __future__ import annotations

import math

import pytest
from ferry_autoscaler.algorithm.histogram import HistogramError, HistogramSnapshot, quantile

INF = math.inf
PAST = HistogramSnapshot.of(0, 5, [(0.5, 2), (0.75, 4), (INF, 5)])


def test_snapshot_keeps_values_and_inf_bucket() -> None:
    snap = HistogramSnapshot.of(256.7, 100, [(0.5, 30), (0.1, 10), (INF, 100)])
    assert (snap.sum, snap.count, snap.buckets) == (256.7, 100, [(0.1, 10), (0.5, 30), (INF, 100)])


def test_count_going_backwards_is_an_error() -> None:
    with pytest.raises(HistogramError, match=r"invalid totalCountDiff \(-1"):
        quantile(95, HistogramSnapshot.of(0, 4, [(INF, 4)]), PAST)
    assert quantile(95, PAST, PAST) == 0


def test_bucket_mismatch_and_decreasing_buckets_are_errors() -> None:
    with pytest.raises(HistogramError, match="unmatched buckets lengths"):
        quantile(50, HistogramSnapshot.of(0, 10, [(0.5, 4), (INF, 10)]), PAST)
    with pytest.raises(HistogramError, match="non-decreasing is broken"):
        quantile(50, HistogramSnapshot.of(0, 10, [(0.5, 9), (0.75, 5), (INF, 10)]), PAST)


@pytest.mark.parametrize(
    ("percentile", "now", "past", "expected"),
    [
        (100, [(0.5, 4), (0.75, 8), (INF, 10)], PAST, 1.5),
        (95, [(0.5, 2), (0.75, 4), (INF, 8)], None, 1.5),
        (1, [(0.5, 3), (0.75, 8), (INF, 10)], PAST, 0.5),
        (50, [(0.5, 2), (0.75, 9), (INF, 10)], PAST, 0.65),
    ],
)
def test_quantiles(
    percentile: float, now: list[tuple[float, float]], past: HistogramSnapshot | None, expected: float
) -> None:
    snapshot = HistogramSnapshot.of(0, now[-1][1], now)
    assert quantile(percentile, snapshot, past) == pytest.approx(expected)


def test_both_empty_is_zero() -> None:
    assert quantile(95, HistogramSnapshot(), HistogramSnapshot()) == 0
