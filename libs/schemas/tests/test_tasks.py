"""``cancel_and_wait`` and ``cancel_all``: a task that swallows a cancel (as 3.11's ``wait_for`` can) ends."""

from __future__ import annotations

import asyncio

import pytest
from ferry_schemas.runtime.tasks import cancel_all, cancel_and_wait


async def test_a_task_that_swallows_the_first_cancel_is_cancelled_again_until_it_ends() -> None:
    swallowed = 0
    started = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal swallowed
        started.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:  # the second cancel ends it
                    raise
                swallowed += 1  # the first one is lost, as when a request's answer arrived with it

    task = asyncio.create_task(heartbeat())
    await started.wait()
    await asyncio.wait_for(cancel_and_wait(task), timeout=10)
    assert task.cancelled()
    assert swallowed == 1


async def test_an_ended_task_is_left_alone_and_its_error_raised() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.wait({task})
    with pytest.raises(RuntimeError, match="boom"):
        await cancel_and_wait(task)


async def test_a_task_that_obeys_ends_with_one_cancel() -> None:
    task = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_cancel_all_ends_every_task_even_one_that_swallows_a_cancel_and_drops_their_errors() -> None:
    swallowed = 0
    started = asyncio.Event()

    async def stubborn() -> None:
        nonlocal swallowed
        started.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    async def fails() -> None:
        raise RuntimeError("boom")

    tasks = [asyncio.create_task(work) for work in (stubborn(), asyncio.sleep(3600), fails())]
    await started.wait()
    await asyncio.wait_for(cancel_all(tasks), timeout=10)
    assert [task.done() for task in tasks] == [True, True, True]
    assert tasks[0].cancelled()
    assert tasks[1].cancelled()
    assert isinstance(tasks[2].exception(), RuntimeError)
    assert swallowed == 1
