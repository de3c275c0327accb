"""Spec §7.6: ``optimizer_test.go`` (ratio metrics, aggregation, blocks, split)."""

from __future__ import annotations

import pytest
from ferry_autoscaler.algorithm.optimizer import Backend, OptimizerPlan, aggregate_external, is_ratio_metric

RATIO = [
    "gpu_utilization", "cpu_utilization", "memory_utilization", "cache_usage", "disk_usage", "fill_ratio",
    "load_percent", "queue_saturation", "GPU_utilization", "CPU_UTILIZATION", "Cache_Usage",
]  # fmt: skip
NOT_RATIO = [
    "queue_length", "request_count", "token_rate", "request_rate", "throughput_rate", "pending_requests",
    "gpu_utilization_rate",
]  # fmt: skip


@pytest.mark.parametrize("name", RATIO)
def test_ratio_metrics(name: str) -> None:
    assert is_ratio_metric(name)


@pytest.mark.parametrize("name", NOT_RATIO)
def test_total_metrics(name: str) -> None:
    assert not is_ratio_metric(name)


@pytest.mark.parametrize(
    ("name", "samples", "expected"),
    [
        ("queue_length", [(100, 3), (200, 1)], 300),
        ("request_rate", [(50, 2), (70, 2)], 120),
        ("gpu_utilization", [(60, 3), (70, 1)], 62.5),
        ("memory_utilization", [(60, 2), (70, 2)], 65),
        ("gpu_utilization", [(60, 4), (70, 6)], 66),
        ("cache_usage", [(60, 0), (80, 0)], 70),
        ("gpu_utilization", [(60, 0), (80, 5)], 80),
        ("pending_requests", [(42, 3)], 42),
        ("gpu_utilization", [(75, 2)], 75),
        ("queue_length", [(10, 1), (20, 4), (30, 2)], 60),
    ],
)
def test_aggregate(name: str, samples: list[tuple[float, int]], expected: float) -> None:
    assert aggregate_external(name, samples) == pytest.approx(expected)


H100 = Backend("ns/h100", 10, 2, 6)
A100 = Backend("ns/a100", 5, 1, 4)


def test_plan_bounds_and_blocks() -> None:
    plan = OptimizerPlan.build([H100, A100], 200)
    assert (plan.min_total, plan.max_total) == (3, 10)
    assert OptimizerPlan.build([Backend("ns/x", 10, 5, 5)], 200).blocks == ()
    two = OptimizerPlan.build([H100, A100], 100)
    assert [(b.backend, b.size) for b in two.blocks] == [(1, 3), (0, 4)]  # cheapest first
    assert len(OptimizerPlan.build([Backend("ns/x", 10, 1, 5)], 50).blocks) > 1


def test_blocks_grow_geometrically() -> None:
    """Spec §4.5's example: rate 200, costs A=60, H=100 → A1 H1 A2 H2 A4 H4 …"""
    plan = OptimizerPlan.build([Backend("ns/h", 100, 0, 7), Backend("ns/a", 60, 0, 7)], 200)
    assert [("ha"[b.backend], b.size) for b in plan.blocks] == [
        ("a", 1), ("h", 1), ("a", 2), ("h", 2), ("a", 4), ("h", 4),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("backends", "total", "expected"),
    [
        ([Backend("ns/h100", 10, 1, 4), Backend("ns/a100", 5, 1, 3)], 5, {"ns/a100": 3, "ns/h100": 2}),
        ([Backend("ns/h100", 10, 2, 5)], 0, {"ns/h100": 2}),
        ([Backend("ns/h100", 10, 1, 3)], 999, {"ns/h100": 3}),
        ([Backend("ns/h100", 10, 1, 4)], 4, {"ns/h100": 4}),
        (
            [Backend("team-a/llama", 100, 1, 3), Backend("team-b/llama", 60, 2, 5)],
            8,
            {"team-a/llama": 3, "team-b/llama": 5},
        ),
    ],
)
def test_split(backends: list[Backend], total: int, expected: dict[str, int]) -> None:
    assert OptimizerPlan.build(backends, 100).split(total) == expected
