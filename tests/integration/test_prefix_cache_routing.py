"""prefix-cache end to end: a prefix's follow-up goes where its first request was sent.

Real processes: two ``ferry-mock-engine`` engines, the router configured with least-request and
prefix-cache, the official ``openai`` client streaming. The router learns a prompt's pod when it
sends the request (Kthena: once the answer has ended), so a request sharing the prefix, sent while
the first answer is still streaming, follows it to the pod that is prefilling that prefix.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.router_world import World, engine_latency, serve_pool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# Weighed 2:1, a learned prefix outweighs one request in flight on its pod (1:1 would tie the holder,
# which least-request scores 0 with that request there, against an idle pod's 100).
ROUTER_CONFIG = """
scheduler:
  plugins:
    Score:
      enabled:
      - {name: least-request, weight: 1}
      - {name: prefix-cache, weight: 2}
"""
SLOW_STREAM = engine_latency("50ms", "150ms")


def system_prompt(topic: str) -> str:
    return " ".join(f"{topic} fact {i}: the {topic} of part {i} is well known." for i in range(40))


async def test_a_follow_up_sent_while_the_first_answer_streams_goes_to_the_same_pod(
    bus: World, tmp_path: Path
) -> None:
    pool = await serve_pool(bus, tmp_path, ROUTER_CONFIG, {"a": SLOW_STREAM, "b": SLOW_STREAM})
    for topic in ("astronomy", "botany", "geology", "zoology"):
        system = system_prompt(topic)
        started = asyncio.Event()
        first = asyncio.create_task(
            pool.ask("Where do we start?", system=system, max_tokens=12, started=started)
        )
        await asyncio.wait_for(started.wait(), 30)  # sent, and being answered
        follow_up = await pool.ask("And what comes next?", system=system)
        assert follow_up == await first, f"the {topic} follow-up left the pod its prefix was sent to"
