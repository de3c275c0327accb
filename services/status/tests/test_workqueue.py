import asyncio

import pytest
from ferry_status.workqueue import KeyedQueue


async def test_requests_for_one_key_coalesce_and_never_overlap() -> None:
    running = 0
    calls: list[str] = []
    gate = asyncio.Event()

    async def reconcile(key: str, _ctx: object) -> None:
        nonlocal running
        running += 1
        assert running == 1
        calls.append(key)
        await gate.wait()
        running -= 1

    queue: KeyedQueue[str] = KeyedQueue(reconcile, workers=4)
    first = asyncio.create_task(queue.submit("a"))
    await asyncio.sleep(0)
    # these arrive while "a" is running: they share one follow-up reconcile
    later = [asyncio.create_task(queue.submit("a")) for _ in range(5)]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(first, *later)
    assert calls == ["a", "a"]
    assert len(queue) == 0


async def test_errors_reach_every_waiter() -> None:
    async def reconcile(key: str, _ctx: object) -> None:
        raise RuntimeError(f"boom {key}")

    queue: KeyedQueue[str] = KeyedQueue(reconcile)
    with pytest.raises(RuntimeError, match="boom k"):
        await queue.submit("k")


async def test_settle_turns_a_burst_into_one_reconcile() -> None:
    calls: list[str] = []

    async def reconcile(key: str, _ctx: object) -> None:
        calls.append(key)

    queue: KeyedQueue[str] = KeyedQueue(reconcile, settle=0.05)
    burst = []
    for _ in range(5):
        burst.append(asyncio.create_task(queue.submit("ms")))
        await asyncio.sleep(0.005)
    await asyncio.gather(*burst)
    assert calls == ["ms"]
