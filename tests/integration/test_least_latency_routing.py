"""least-latency end to end: the router measures the streams it relays and routes by them.

Real processes: ``ferry-mock-engine`` engines with fixed first-token and inter-token latencies
(Kthena's e2e case: fast 20 ms / 5 ms against slow 500 ms / 20 ms), the router configured with
least-latency alone, the official ``openai`` client streaming. Which engine answered comes from the
answers (``via <engine>``), what the router measured from its debug dump.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from tests.support.router_world import World, engine_latency, serve_pool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVED = "org/latency-model"
ROUTER_CONFIG = """
scheduler:
  plugins:
    Score:
      enabled:
      - {name: least-latency, weight: 1}
"""


async def test_requests_go_to_the_engine_with_the_lower_latency(bus: World, tmp_path: Path) -> None:
    pool = await serve_pool(
        bus,
        tmp_path,
        ROUTER_CONFIG,
        {"fast": engine_latency("20ms", "5ms"), "slow": engine_latency("500ms", "20ms")},
        SERVED,
    )
    served = Counter([await pool.ask(f"question {i}") for i in range(20)])
    # each engine is tried once before the measured one is preferred, then the fast one takes the rest
    assert served["fast"] >= 19, f"least-latency sent {served['slow']} of 20 requests to the slow engine"
    seen = pool.observed()
    assert seen["fast"]["ttftPerQueuedSeconds"] > 0
    assert seen["fast"]["tpotPerInflightSeconds"] > 0
    assert seen["fast"]["awaitingFirstToken"] == 0
    if served["slow"]:  # tried once as an unmeasured engine, measured slower
        assert seen["slow"]["ttftPerQueuedSeconds"] > 5 * seen["fast"]["ttftPerQueuedSeconds"]


async def test_a_burst_is_spread_by_the_queue_it_meets(bus: World, tmp_path: Path) -> None:
    """Two equal engines, measured, then 30 requests at once: each request sent raises the projected
    first-token time of its engine by one queued request, so the burst does not pile onto the engine
    that looked faster (as it would on the measures alone: they change only as first tokens come)."""
    pool = await serve_pool(
        bus,
        tmp_path,
        ROUTER_CONFIG,
        {"a": engine_latency("150ms", "5ms"), "b": engine_latency("150ms", "5ms")},
        SERVED,
    )
    for i in range(12):  # until both are measured
        await pool.ask(f"warm {i}")
        if all(pod["ttftPerQueuedSeconds"] > 0 for pod in pool.observed().values()):
            break
    assert all(pod["ttftPerQueuedSeconds"] > 0 for pod in pool.observed().values())
    burst = Counter(await asyncio.gather(*(pool.ask(f"burst {i}") for i in range(30))))
    assert min(burst["a"], burst["b"]) >= 8, f"a burst of 30 split {dict(burst)}"
