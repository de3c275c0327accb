"""Ending a background task for certain, even one whose loop swallowed a cancel."""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_S = 0.2
"""Seconds a cancelled task has to end before it is cancelled again."""


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and return once it has ended; an exception it ended with is raised.

    On Python 3.11 ``asyncio.wait_for`` returns the awaited result instead of raising
    ``CancelledError`` when the cancel arrives in the same loop iteration as that result
    (CPython gh-86296, fixed in 3.12), and nats-py awaits every request through it. A loop of
    requests — a heartbeat, a fetch — can so outlive one cancel, and awaiting it after a single
    ``cancel()`` hangs. The task is cancelled again until it ends.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_S)
    if not task.cancelled():
        task.result()
