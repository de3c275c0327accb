"""The fairness queue (spec §10): priorities from a sliding usage window, order, bounds, exchange."""

from __future__ import annotations

import asyncio
import math

import orjson
import pytest
from ferry_router import errors
from ferry_router.fairness import Fairness, FairnessSettings, FairQueue, TokenTracker


def test_priority_is_weighted_tokens_and_requests_within_the_window() -> None:
    now = [1000.0]
    settings = FairnessSettings(window=60, input_weight=1, output_weight=2, token_weight=1, request_weight=10)
    tracker = TokenTracker(settings, clock=lambda: now[0])
    tracker.record("alice", "m", 10, 5)  # 10 + 2*5 = 20 tokens, 1 request
    tracker.record("alice", "m", 1, 1)
    assert tracker.priority("alice", "m") == 23 + 2 * 10
    assert tracker.priority("alice", "other") == 0
    assert tracker.priority("bob", "m") == 0
    assert tracker.priority("", "m") == math.inf  # anonymous last
    now[0] += 61
    assert tracker.priority("alice", "m") == 0  # slid out of the window


async def test_light_users_go_first_one_users_requests_stay_in_order() -> None:
    settings = FairnessSettings(max_concurrent=1)
    tracker = TokenTracker(settings)
    tracker.record("heavy", "m", 1000, 1000)
    queue = FairQueue("m", tracker, settings)
    order: list[str] = []

    async def request(user: str, tag: str, hold: asyncio.Event | None = None) -> None:
        await queue.admit(user, lambda: False)
        order.append(tag)
        if hold is not None:
            await hold.wait()
        queue.release()

    hold = asyncio.Event()
    first = asyncio.create_task(request("light", "first", hold))  # takes the only permit
    await asyncio.sleep(0.01)
    waiting = [asyncio.create_task(request(u, t)) for u, t in
               (("heavy", "heavy-1"), ("heavy", "heavy-2"), ("light", "light-2"), ("", "anon"))]  # fmt: skip
    await asyncio.sleep(0.01)
    hold.set()
    await asyncio.gather(first, *waiting)
    assert order == ["first", "light-2", "heavy-1", "heavy-2", "anon"]
    queue.close()


async def test_a_request_waits_at_most_the_queue_timeout_and_a_gone_client_is_skipped() -> None:
    settings = FairnessSettings(max_concurrent=1, queue_timeout=0.2)
    queue = FairQueue("m", TokenTracker(settings), settings)
    await queue.admit("a", lambda: False)  # holds the permit
    with pytest.raises(errors.RouterError) as late:
        await queue.admit("b", lambda: False)
    assert late.value.status == 504
    gone = asyncio.create_task(queue.admit("c", lambda: True))
    await asyncio.sleep(0.01)
    queue.release()
    with pytest.raises(errors.RouterError) as left:
        await gone
    assert left.value.status == 503
    assert queue.inflight == 0
    queue.close()


async def test_usage_is_shared_with_other_replicas_but_not_counted_twice() -> None:
    sent: list[bytes] = []

    async def publish(subject: str, data: bytes) -> None:
        sent.append(data)

    a = Fairness(FairnessSettings(), publish=publish, replica="a")
    b = Fairness(FairnessSettings(), replica="b")
    await a.record("alice", "m", 10, 10)
    for data in sent:
        a.on_usage_message(data)  # its own message comes back: ignored
        b.on_usage_message(data)
    assert a.tracker.priority("alice", "m") == b.tracker.priority("alice", "m") == 30
    b.on_usage_message(orjson.dumps({"replica": "x"}))  # malformed: ignored
    assert b.tracker.priority("alice", "m") == 30
