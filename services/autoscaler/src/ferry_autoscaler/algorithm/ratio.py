"""Repair of the ratio between two roles of a disaggregated target (spec §4.6 step 4)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class RoleBounds:
    min_replicas: int
    max_replicas: int

    def clamp(self, value: int) -> int:
        return min(max(value, self.min_replicas), self.max_replicas)


@dataclass(frozen=True)
class Ratio:
    numerator: str
    denominator: str
    min_ratio: float
    max_ratio: float


@dataclass(frozen=True)
class RatioResult:
    replicas: dict[str, int]
    adjusted: bool
    current_ratio: str
    """``num/den`` as the shortest decimal ("0.5", "1"); "" without a constraint or with den 0."""


def format_ratio(value: float) -> str:
    """Go's ``FormatFloat(v, 'f', -1, 64)``: shortest round-trip digits, never an exponent."""
    return f"{Decimal(repr(value)).normalize():f}"


def enforce_ratio(
    replicas: Mapping[str, int], bounds: Mapping[str, RoleBounds], constraint: Ratio | None
) -> RatioResult:
    result = {role: bounds[role].clamp(value) for role, value in replicas.items()}
    if constraint is None:
        return RatioResult(result, False, "")
    num_role, den_role = constraint.numerator, constraint.denominator
    num_bounds, den_bounds = bounds[num_role], bounds[den_role]
    num, den = result[num_role], result[den_role]
    if num == 0 and den == 0:
        return RatioResult(result, False, "")  # coupled scale-to-zero
    adjusted = False
    if num == 0:
        num, adjusted = num_bounds.clamp(1), True
    if den == 0:
        den, adjusted = den_bounds.clamp(1), True
    current = num / den if den else math.inf
    if current < constraint.min_ratio:
        adjusted = True
        wanted = math.ceil(constraint.min_ratio * den)
        if wanted <= num_bounds.max_replicas:
            num = max(wanted, num_bounds.min_replicas)
        elif constraint.min_ratio > 0:
            num = num_bounds.max_replicas
            den = den_bounds.clamp(math.floor(num / constraint.min_ratio))
    elif current > constraint.max_ratio:
        adjusted = True
        if constraint.max_ratio <= 0:
            num = 0
        else:
            wanted = math.ceil(num / constraint.max_ratio)
            if wanted <= den_bounds.max_replicas:
                den = max(wanted, den_bounds.min_replicas)
            else:
                den = den_bounds.max_replicas
                num = num_bounds.clamp(math.floor(constraint.max_ratio * den))
    num, den = num_bounds.clamp(num), den_bounds.clamp(den)
    result[num_role], result[den_role] = num, den
    return RatioResult(result, adjusted, format_ratio(num / den) if den else "")
