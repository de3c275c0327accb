"""The shared keyed work queue: coalescing, no overlap per key, retry forever with back-off."""

import asyncio
import itertools

from ferry_schemas.runtime.workqueue import Backoff, WorkQueue


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

    queue: WorkQueue[str] = WorkQueue("t", reconcile, workers=4)
    first = asyncio.create_task(queue.submit("a"))
    await asyncio.sleep(0)
    # these arrive while "a" is running: they share one follow-up reconcile
    later = [asyncio.create_task(queue.submit("a")) for _ in range(5)]
    for _ in range(3):
        queue.add("a")
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(first, *later)
    assert calls == ["a", "a"]
    assert len(queue) == 0


async def test_different_keys_run_concurrently_up_to_workers() -> None:
    running, peak = 0, 0
    release = asyncio.Event()

    async def reconcile(key: str, _ctx: object) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    queue: WorkQueue[str] = WorkQueue("t", reconcile, workers=2)
    tasks = [asyncio.create_task(queue.submit(k)) for k in "abcd"]
    await asyncio.sleep(0.02)
    assert peak == 2
    release.set()
    await asyncio.gather(*tasks)


async def test_a_free_worker_takes_the_lowest_priority_key_first() -> None:
    order: list[str] = []
    release = asyncio.Event()

    async def reconcile(key: str, _ctx: object) -> None:
        order.append(key)
        if key == "busy":
            await release.wait()

    queue: WorkQueue[str] = WorkQueue(
        "t", reconcile, workers=1, priority=lambda key: 0 if key[0] == "s" else 1
    )
    busy = asyncio.create_task(queue.submit("busy"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(queue.submit(k)) for k in ("b1", "b2", "s1", "b3", "s2")]
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(busy, *waiting)
    assert order == ["busy", "s1", "s2", "b1", "b2", "b3"]


async def test_adds_while_waiting_for_a_worker_join_the_coming_reconcile() -> None:
    calls: list[str] = []
    release = asyncio.Event()

    async def reconcile(key: str, _ctx: object) -> None:
        calls.append(key)
        if key == "busy":
            await release.wait()

    queue: WorkQueue[str] = WorkQueue("t", reconcile, workers=1)
    busy = asyncio.create_task(queue.submit("busy"))
    await asyncio.sleep(0)
    first = asyncio.create_task(queue.submit("a"))
    await asyncio.sleep(0.01)  # "a" waits for the worker "busy" holds
    later = [asyncio.create_task(queue.submit("a")) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(busy, first, *later)
    assert calls == ["busy", "a"]


async def test_failures_are_retried_until_success_and_waiters_see_only_success() -> None:
    attempts: list[float] = []

    async def reconcile(key: str, _ctx: object) -> None:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 4:
            raise ConnectionError("API server away")

    queue: WorkQueue[str] = WorkQueue("t", reconcile, backoff=Backoff(base=0.05, cap=0.4, jitter=0.0))
    await asyncio.wait_for(queue.submit("k"), timeout=3)
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.045
    assert gaps[2] >= 0.19  # 0.05, 0.1, 0.2: the back-off doubles
    assert queue.failures("k") == 0
    assert len(queue) == 0


async def test_an_add_during_back_off_does_not_shorten_it() -> None:
    attempts = 0

    async def reconcile(key: str, _ctx: object) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("away")

    queue: WorkQueue[str] = WorkQueue("t", reconcile, backoff=Backoff(base=0.2, cap=0.2, jitter=0.0))
    waiter = asyncio.create_task(queue.submit("k"))
    await asyncio.sleep(0.02)
    assert queue.failures("k") == 1
    queue.add("k")
    await asyncio.sleep(0.05)
    assert attempts == 1
    await asyncio.wait_for(waiter, timeout=1)
    assert attempts == 2


async def test_settle_turns_a_burst_into_one_reconcile() -> None:
    calls: list[str] = []

    async def reconcile(key: str, _ctx: object) -> None:
        calls.append(key)

    queue: WorkQueue[str] = WorkQueue("t", reconcile, settle=0.05)
    burst = []
    for _ in range(5):
        burst.append(asyncio.create_task(queue.submit("ms")))
        await asyncio.sleep(0.005)
    await asyncio.gather(*burst)
    assert calls == ["ms"]


async def test_add_after_queues_later() -> None:
    done = asyncio.Event()

    async def reconcile(key: str, _ctx: object) -> None:
        done.set()

    queue: WorkQueue[str] = WorkQueue("t", reconcile)
    queue.add_after("k", 0.05)
    await asyncio.sleep(0.02)
    assert not done.is_set()
    await asyncio.wait_for(done.wait(), timeout=1)


def test_backoff_is_capped_and_jittered_downwards() -> None:
    backoff = Backoff(base=0.5, cap=30.0, jitter=0.2)
    assert backoff.delay(1) <= 0.5
    assert 24.0 <= backoff.delay(20) <= 30.0


async def test_idle_for_counts_from_the_last_reconcile_not_while_a_key_waits_backs_off_or_not() -> None:
    release = asyncio.Event()
    attempts = 0

    async def reconcile(key: str, _ctx: object) -> None:
        nonlocal attempts
        attempts += 1
        await release.wait()
        if attempts == 1:
            raise RuntimeError("first attempt fails")

    queue: WorkQueue[str] = WorkQueue("t", reconcile, workers=1, backoff=Backoff(base=60.0, jitter=0.0))
    assert queue.idle_for() > 0.0
    queue.add("a")
    assert queue.idle_for() == 0.0  # waiting for a worker is work
    release.set()
    for _ in range(100):
        if queue.failures("a"):
            break
        await asyncio.sleep(0.005)
    assert queue.failures("a") == 1
    first = queue.idle_for()
    assert first > 0.0  # backing off for a minute: no work now
    assert len(queue) == 1
    await asyncio.sleep(0.01)
    assert queue.idle_for() > first
    await queue.stop()


async def test_wants_context_until_a_queued_reconcile_has_one() -> None:
    from opentelemetry.context import Context

    gate = asyncio.Event()
    contexts: list[object] = []

    async def reconcile(key: str, ctx: object) -> None:
        contexts.append(ctx)
        await gate.wait()

    queue: WorkQueue[str] = WorkQueue("t", reconcile, workers=1, settle=0.01)
    traced = Context({"trace": 1})
    assert queue.wants_context("a")  # nothing queued
    queue.add("a")
    assert queue.wants_context("a")  # queued without a trace (a resync): the next add's joins it
    queue.add("a", traced)
    assert not queue.wants_context("a")  # the queued reconcile has its trace: a later one is not taken
    await asyncio.sleep(0.05)
    assert contexts == [traced]
    assert queue.wants_context("a")  # running: an add now queues one more reconcile, in its trace
    gate.set()
    await asyncio.sleep(0.05)
    assert len(queue) == 0
