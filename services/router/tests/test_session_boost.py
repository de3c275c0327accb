"""Session boost (spec §11): recent sessions first, admission by in-flight and engine queues."""

from __future__ import annotations

import asyncio

import orjson
from ferry_router.session_boost import RecentSessions, SessionBoost, SessionBoostSettings, SessionQueue
from ferry_router.state.table import RoutingTable

from .objects import pod, server


def endpoints(waiting: float = 0.0) -> RoutingTable:
    table = RoutingTable()
    table.apply_server("default/srv", server("srv", {"app": "m"}))
    table.apply_pod("default/p0", pod("p0", {"app": "m"}, "127.0.0.2"))
    for endpoint in table.all_endpoints():
        endpoint.metrics.waiting = waiting
    return table


def test_recent_sessions_is_an_lru_that_keeps_the_latest_completion() -> None:
    lru = RecentSessions(2)
    lru.completed("a", 1.0)
    lru.completed("b", 2.0)
    lru.completed("a", 0.5)  # older news is ignored
    assert lru.last("a") == 1.0
    lru.completed("c", 3.0)
    assert lru.last("a") is None  # evicted (least recently completed)
    assert lru.last("c") == 3.0


async def test_boosted_sessions_go_first_most_recent_first_then_fifo() -> None:
    settings = SessionBoostSettings(inflight_per_pod=1)
    sessions = RecentSessions(10)
    sessions.completed("old", 1.0)
    sessions.completed("recent", 2.0)
    table = endpoints()
    queue = SessionQueue("m", sessions, settings)
    order: list[str] = []
    hold = asyncio.Event()

    async def request(session: str, keep: asyncio.Event | None = None) -> None:
        await queue.admit(session, lambda: table.server_endpoints("default/srv"), lambda: False)
        order.append(session or "none")
        if keep is not None:
            await keep.wait()
        queue.release()

    first = asyncio.create_task(request("", hold))  # the one slot (1 per pod, 1 pod)
    await asyncio.sleep(0.01)
    rest = [asyncio.create_task(request(s)) for s in ("new-1", "old", "new-2", "recent")]
    await asyncio.sleep(0.01)
    hold.set()
    await asyncio.gather(first, *rest)
    assert order == ["none", "recent", "old", "new-1", "new-2"]
    queue.close()


async def test_nothing_is_admitted_while_every_engine_has_a_queue() -> None:
    table = endpoints(waiting=3)
    queue = SessionQueue("m", RecentSessions(4), SessionBoostSettings(timeout=5))
    admitted = asyncio.create_task(
        queue.admit("s", lambda: table.server_endpoints("default/srv"), lambda: False)
    )
    await asyncio.sleep(0.2)
    assert not admitted.done()
    for endpoint in table.all_endpoints():
        endpoint.metrics.waiting = 0  # the scraper saw the engine drain
    await asyncio.wait_for(admitted, 2)
    queue.close()


async def test_completions_are_shared_between_replicas() -> None:
    sent: list[bytes] = []

    async def publish(subject: str, data: bytes) -> None:
        sent.append(data)

    a = SessionBoost(SessionBoostSettings(), publish=publish)
    b = SessionBoost(SessionBoostSettings())
    await a.completed("chat-42")
    for data in sent:
        b.on_completed_message(data)
    assert b.sessions.last("chat-42") == a.sessions.last("chat-42")
    b.on_completed_message(orjson.dumps({"nope": 1}))
