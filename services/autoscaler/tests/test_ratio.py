"""Spec §7.3: ``disaggregated_ratio_test.go`` (prefill/decode, ratio 0.25..1)."""

from __future__ import annotations

import pytest
from ferry_autoscaler.algorithm.ratio import Ratio, RoleBounds, enforce_ratio, format_ratio

RATIO = Ratio("prefill", "decode", 0.25, 1.0)
BOUNDS = {"prefill": RoleBounds(0, 8), "decode": RoleBounds(0, 16)}


@pytest.mark.parametrize(
    ("prefill", "decode", "bounds", "constraint", "expected", "adjusted", "ratio"),
    [
        (2, 4, BOUNDS, RATIO, (2, 4), False, "0.5"),
        (1, 8, BOUNDS, RATIO, (2, 8), True, "0.25"),
        (6, 2, BOUNDS, RATIO, (6, 6), True, "1"),
        (2, 20, {"prefill": RoleBounds(0, 3), "decode": RoleBounds(0, 20)}, RATIO, (3, 12), True, "0.25"),
        (0, 4, BOUNDS, RATIO, (1, 4), True, "0.25"),
        (4, 0, BOUNDS, RATIO, (4, 4), True, "1"),
        (0, 0, BOUNDS, RATIO, (0, 0), False, ""),
        (10, 4, BOUNDS, None, (8, 4), False, ""),
    ],
)
def test_ratio_table(
    prefill: int,
    decode: int,
    bounds: dict[str, RoleBounds],
    constraint: Ratio | None,
    expected: tuple[int, int],
    adjusted: bool,
    ratio: str,
) -> None:
    result = enforce_ratio({"prefill": prefill, "decode": decode}, bounds, constraint)
    assert (result.replicas["prefill"], result.replicas["decode"]) == expected
    assert result.adjusted is adjusted
    assert result.current_ratio == ratio


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.5, "0.5"), (1.0, "1"), (100.0, "100"), (1e-5, "0.00001"), (1 / 3, "0.3333333333333333")],
)
def test_ratio_text_is_go_shortest_decimal(value: float, text: str) -> None:
    assert format_ratio(value) == text
