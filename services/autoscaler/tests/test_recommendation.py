"""Spec §7.1: Kthena's ``recommendation_test.go`` table."""

from __future__ import annotations

import pytest
from ferry_autoscaler.algorithm.recommendation import RecommendationInput, recommend

E = {"a": 1.0}

CASES = [
    # (min, max, current, tolerance, targets, unready, ready, external, expected)
    (5, 10, 4, 0.1, {}, 4, [], {}, 5),
    (5, 10, 11, 0.1, {}, 0, [], {}, 10),
    (5, 10, 7, 0.1, {"a": 0.5, "b": 8}, 7, [], {}, None),
    (1, 1_000_000, 3, 0, {"a": 3, "b": 5, "c": 4}, 0, 3 * [{"a": 6, "b": 500, "c": 20}], {}, 300),
    (1, 100, 1, 0, {"a": 0}, 0, [{"a": 1}], {}, 100),
    (1, 100, 1, 0, {"a": 1e-100}, 0, [{"a": 1e100}], {}, 100),
    (1, 100, 3, 0, E, 0, [{"a": 19.1}, {"a": 3.1}, {"a": 7.1}], {}, 30),
    (5, 20, 10, 0, E, 0, 10 * [{"a": 0.1}], {}, 5),
    (5, 20, 10, 0, E, 0, 10 * [{"a": 3}], {}, 20),
    (1, 100, 9, 0.5, E, 0, 10 * [{"a": 0.51}], {}, 9),
    (1, 100, 9, 0.5, E, 0, 10 * [{"a": 0.49}], {}, 5),
    (1, 100, 9, 0.5, E, 0, 10 * [{"a": 1.49}], {}, 9),
    (1, 100, 9, 0.5, E, 0, 10 * [{"a": 1.51}], {}, 16),
    (1, 100, 58, 0, E, 50, 8 * [{"a": 0.15}], {}, 2),
    (1, 100, 18, 0, E, 10, 8 * [{"a": 3.9}], {}, 32),
    (1, 100, 58, 0, E, 50, 8 * [{"a": 3.9}], {}, 58),
    (1, 100, 10, 0, E, 0, 2 * [{}] + 8 * [{"a": 0.5}], {}, 6),
    (1, 100, 10, 0, E, 0, 2 * [{}] + 8 * [{"a": 2.9}], {}, 24),
    (1, 100, 58, 0, E, 0, 50 * [{}] + 8 * [{"a": 2.9}], {}, 58),
    (1, 100, 58, 0, E, 0, 4 * [{}] + 8 * [{"a": 2.9}], {}, 58),
    (1, 100, 10, 0.51, {"a": 3}, 0, [], {"a": 14.9}, 10),
    (1, 100, 10, 0.49, {"a": 3}, 0, [], {"a": 14.9}, 5),
    (1, 100, 10, 0.51, {"a": 3}, 0, [], {"a": 44.9}, 10),
    (1, 100, 10, 0.49, {"a": 3}, 0, [], {"a": 44.9}, 15),
    (1, 100, 1, 0, {"a": 0}, 0, [], {"a": 1}, 100),
    (1, 100, 1, 0, {"a": 1e-100}, 0, [], {"a": 1e100}, 100),
]


@pytest.mark.parametrize(
    ("low", "high", "current", "tolerance", "targets", "unready", "ready", "external", "expected"),
    CASES,
    ids=[f"row{i + 1}" for i in range(len(CASES))],
)
def test_recommendation_table(
    low: int,
    high: int,
    current: int,
    tolerance: float,
    targets: dict[str, float],
    unready: int,
    ready: list[dict[str, float]],
    external: dict[str, float],
    expected: int | None,
) -> None:
    args = RecommendationInput(low, high, current, tolerance, targets, unready, ready, external)
    assert recommend(args) == expected
