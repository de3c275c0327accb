"""The metric-derived replica recommendation (spec §4.1; ``recommendation.go`` in Kthena).

Pod metrics arrive as per-"instance" maps: homogeneous and disaggregated targets pass one map holding
the sum over ready pods, the heterogeneous optimiser one map per backend. External (Prometheus)
values are totals: ``desired = ceil(value / target)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

CEIL_LIMIT = 1_000_000_000
"""Kthena caps every ceiling at 1e9 (an infinite ratio from a zero target becomes 1e9, then max)."""


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` with IEEE semantics (x/0 = ±inf, 0/0 = nan), as Go computes it."""
    if denominator == 0:
        return math.nan if numerator == 0 or math.isnan(numerator) else math.copysign(math.inf, numerator)
    return numerator / denominator


def bounded_ceil(value: float) -> int:
    """``ceil`` that maps NaN and negatives to 0 and caps at 1e9."""
    if math.isnan(value) or value < 0:
        return 0
    if value >= CEIL_LIMIT:
        return CEIL_LIMIT
    return math.ceil(value)


@dataclass(frozen=True)
class RecommendationInput:
    min_replicas: int
    max_replicas: int
    current: int
    tolerance: float
    """``tolerancePercent * 0.01``."""
    targets: Mapping[str, float]
    unready: int = 0
    ready: Sequence[Mapping[str, float]] = ()
    external: Mapping[str, float] = field(default_factory=dict)


def recommend(args: RecommendationInput) -> int | None:
    """The recommended replica count, or ``None`` (skip: no metric produced a value)."""
    if args.current < args.min_replicas:
        return args.min_replicas
    if args.current > args.max_replicas:
        return args.max_replicas
    best: int | None = None
    for key, target in args.targets.items():
        if key in args.external:
            desired: int | None = _external(args.external[key], target, args.current, args.tolerance)
        else:
            desired = _per_instance(key, target, args)
        if desired is not None:
            best = desired if best is None else max(best, desired)
    if best is None:
        return None
    return min(max(best, args.min_replicas), args.max_replicas)


def _external(value: float, target: float, current: int, tolerance: float) -> int:
    desired = ratio(value, target)
    if abs(ratio(desired, current) - 1) <= tolerance:
        return current
    return bounded_ceil(desired)


def _per_instance(key: str, target: float, args: RecommendationInput) -> int | None:
    values = [instance[key] for instance in args.ready if key in instance]
    present = len(values)
    if present == 0:
        return None
    missing = len(args.ready) - present
    total = sum(values)
    load = ratio(ratio(total, present), target)
    up = load >= 1
    unready_matter = args.unready > 0 and up
    if not unready_matter and missing == 0:
        if abs(load - 1) <= args.tolerance:
            return args.current
        return bounded_ceil(load * present)
    count = present + missing
    if not up:
        total += missing * target  # missing instances are assumed to sit at the target
    if unready_matter:
        count += args.unready  # unready instances count as zero load
    adjusted = ratio(ratio(total, count), target)
    if abs(adjusted - 1) <= args.tolerance or (adjusted >= 1) != up:
        return args.current
    desired = bounded_ceil(adjusted * count)
    if (not up and desired > args.current) or (up and desired < args.current):
        return args.current
    return desired
