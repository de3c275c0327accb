"""The report of where a process waits: each task's await chain down to what it waits on, logged on
SIGUSR1 and once when start-up does not end in ready."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest
from ferry_schemas.runtime.lifecycle import report_on_sigusr1
from ferry_schemas.runtime.stacks import await_chain, watch_startup

STACKS = "ferry_schemas.runtime.stacks"


async def inner_step(gate: asyncio.Event) -> None:
    await gate.wait()


async def outer_step(gate: asyncio.Event) -> None:
    await inner_step(gate)


async def test_the_chain_follows_every_await_down_to_the_future() -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(outer_step(gate), name="stuck-start")
    await asyncio.sleep(0)  # the task runs to its first suspension
    chain = await_chain(task)
    assert [line.rsplit(" in ", 1)[-1] for line in chain[:3]] == ["outer_step", "inner_step", "wait"]
    assert chain[-1].startswith("awaiting <Future pending")
    gate.set()
    await task


def logged(caplog: pytest.LogCaptureFixture, text: str) -> str:
    hits = [r.getMessage() for r in caplog.records if text in r.getMessage()]
    assert hits, f"no log record with {text!r}"
    return hits[0]


class Reported(logging.Handler):
    """Sets ``seen`` when the report is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.set()


async def test_a_start_that_never_gets_ready_logs_where_it_waits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=STACKS)
    gate = asyncio.Event()
    stuck = asyncio.create_task(outer_step(gate), name="stuck-start")

    async def never_ready() -> bool:
        return False

    await watch_startup(never_ready, after=0.0)
    message = logged(caplog, "not ready 0s after start")
    assert "task stuck-start:" in message
    assert "in inner_step" in message
    gate.set()
    await stuck


async def test_a_ready_start_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=STACKS)

    async def ready() -> bool:
        return True

    await watch_startup(ready, after=0.0)
    assert not [r for r in caplog.records if r.name == STACKS]


async def test_sigusr1_logs_the_report(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=STACKS)
    gate = asyncio.Event()
    stuck = asyncio.create_task(outer_step(gate), name="waiting-on-a-gate")
    reported = Reported()
    logging.getLogger(STACKS).addHandler(reported)
    report_on_sigusr1()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(reported.seen.wait(), 10)  # the handler runs on the loop
        message = logged(caplog, "(SIGUSR1)")
        assert "task waiting-on-a-gate:" in message
        assert "thread MainThread:" in message
    finally:
        logging.getLogger(STACKS).removeHandler(reported)
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        gate.set()
        await stuck
