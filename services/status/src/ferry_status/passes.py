"""The loop of a whole-set status controller (Gateway API objects, ExternalModelProviders)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_passes(
    what: str,
    dirty: asyncio.Event,
    synced: Callable[[], bool],
    one_pass: Callable[[], Awaitable[None]],
    *,
    resync: float,
    settle: float = 0.2,
) -> None:
    """Run ``one_pass`` after each change (``dirty``), and every ``resync`` seconds regardless:
    changes settle first (one write per burst), nothing runs before the view is synced, and a
    failed pass is retried after a second."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(dirty.wait(), resync)
        await asyncio.sleep(settle)
        dirty.clear()
        if not synced():
            dirty.set()
            continue
        try:
            await one_pass()
        except Exception:
            log.exception("%s status pass failed; retrying", what)
            await asyncio.sleep(1.0)
            dirty.set()
