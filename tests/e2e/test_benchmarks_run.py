"""The other benchmarks under ``bench/`` end to end at a size small enough for the suite.

The closing notes quote these benchmarks; a benchmark that no longer runs is found here, not when
a figure is due. Each test asserts what any machine must show at that size (every request answered,
every route change seen, every table printed), never a figure.
"""

from __future__ import annotations

import re

import pytest

from tests.support.benchmarks import run_benchmark

pytestmark = pytest.mark.slow


def test_the_converter_benchmark_converts_every_reference_example() -> None:
    out = run_benchmark("bench/converter/run.py", "--seconds", "0.1", timeout=120)
    assert re.search(r"^16-backend booster\s+35\s+\d+", out, re.M), out
    assert re.search(r"convert_serving \d+/s, render_group \d+ groups/s", out), out


@pytest.mark.e2e
def test_the_router_benchmark_answers_through_the_router_without_errors() -> None:
    out = run_benchmark(
        "bench/router/run.py",
        *("--duration", "1", "--engines", "1", "--concurrency", "4", "--workers", "1"),
        *("--streams", "8", "--stream-tokens", "4", "--stream-itl", "0.01"),
        timeout=180,
    )
    side = r"\s+(\d+)\s+[\d.]+\s+[\d.]+\s+(\d+) \|"  # req/s, p50, p99, errors
    row = re.search(rf"^\s+4 \|{side}{side}", out, re.M)
    assert row, out
    router_rps, router_errors, engine_rps, engine_errors = map(int, row.groups())
    assert (router_errors, engine_errors) == (0, 0), out
    assert router_rps > 0, out
    assert engine_rps > 0, out
    assert "8 concurrent streams through the router (4 tokens each): 8 complete, 0 errors" in out, out
    assert re.search(r"^\s+1 \|\s+\d+\s+[\d.]+\s+[\d.]+\s+0 \|", out, re.M), out  # one worker, no errors


@pytest.mark.e2e
def test_the_router_scale_benchmark_sees_every_route_change() -> None:
    out = run_benchmark(
        "bench/router_scale/run.py",
        *("--scales", "2x4", "--idle", "1", "--changes", "2", "--wrk", "1", "--requests", "50"),
        timeout=180,
    )
    assert re.search(r"^\s+2 / 4\s+\|.*\(2/2\).*\(2/2\)", out, re.M), out  # route changes, first answers
    for endpoints in ("1", "10", "100", "1,000"):
        assert re.search(rf"^\s+{endpoints} \|\s+[\d.]+ µs \|\s+[\d.]+ µs$", out, re.M), (endpoints, out)


@pytest.mark.e2e
def test_the_autoscale_benchmark_scales_up_and_from_zero() -> None:
    out = run_benchmark("bench/autoscale/run.py", "--clients", "4", "--cold-starts", "1", timeout=280)
    step = re.search(r"^\s+[\d.]+\s+[\d.]+\s+(\d+)\s+(\d+)\s+-?\d+\s+(\d+)$", out, re.M)
    assert step, out
    wanted, peak, answered = map(int, step.groups())
    assert wanted == 2, out  # 4 clients at target 2 running per replica
    assert peak >= wanted, out
    assert answered > 0, out
    cold_start = r"^\s+1\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+-?[\d.]+\s+[\d.]+$"  # run 1's split and total
    assert re.search(cold_start, out, re.M), out
    assert re.search(r"autoscaler cycle \(scrape \+ decide \+ write\), mean of \d+: [\d.]+ ms", out), out
