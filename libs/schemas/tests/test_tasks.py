"""``cancel_and_wait`` and ``cancel_all``: a task that swallows a cancel (as 3.11's ``wait_for`` can) ends."""

from __future__ import annotations

import asyncio

import pytest
from ferry_schemas.runtime.tasks import cancel_all, cancel_and_wait


class Stubborn:
    """A loop that loses the first cancel, as when a request's answer arrived with it."""

    def __init__(self) -> None:
        self.swallowed = 0
        self.started = asyncio.Event()

    async def run(self) -> None:
        self.started.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.swallowed:  # the second cancel ends it
                    raise
                self.swallowed += 1


async def fails() -> None:
    raise RuntimeError("boom")


async def test_a_task_that_swallows_the_first_cancel_is_cancelled_again_until_it_ends() -> None:
    stubborn = Stubborn()
    task = asyncio.create_task(stubborn.run())
    await stubborn.started.wait()
    await asyncio.wait_for(cancel_and_wait(task), timeout=10)
    assert task.cancelled()
    assert stubborn.swallowed == 1


async def test_an_ended_task_is_left_alone_and_its_error_raised() -> None:
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
    stubborn = Stubborn()
    tasks = [asyncio.create_task(work) for work in (stubborn.run(), asyncio.sleep(3600), fails())]
    await stubborn.started.wait()
    await asyncio.wait_for(cancel_all(tasks), timeout=10)
    assert [task.done() for task in tasks] == [True, True, True]
    assert tasks[0].cancelled()
    assert tasks[1].cancelled()
    assert isinstance(tasks[2].exception(), RuntimeError)
    assert stubborn.swallowed == 1
