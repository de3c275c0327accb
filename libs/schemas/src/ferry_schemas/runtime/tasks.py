"""Ending background tasks for certain, even ones whose loop swallowed a cancel.

On Python 3.11 ``asyncio.wait_for`` returns the awaited result instead of raising
``CancelledError`` when the cancel arrives in the same loop iteration as that result (CPython
gh-86296, fixed in 3.12), and nats-py awaits every request through it. A loop of requests — a
heartbeat, a fetch, a consumer's liveness check — can so outlive one cancel, and awaiting it after
a single ``cancel()`` hangs. Every task still running after :data:`RECANCEL_S` is cancelled again
until it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_S = 0.2
"""Seconds a cancelled task has to end before it is cancelled again."""


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel every task and return once all have ended; what they ended with is dropped.

    The stop of a process or component: like ``cancel()`` on each and
    ``gather(..., return_exceptions=True)``, without the hang.
    """
    ending = list(tasks)
    while running := [task for task in ending if not task.done()]:
        for task in running:
            task.cancel()
        await asyncio.wait(running, timeout=RECANCEL_S)
    for task in ending:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and return once it has ended; an exception it ended with is raised."""
    await cancel_all([task])
    if not task.cancelled():
        task.result()
