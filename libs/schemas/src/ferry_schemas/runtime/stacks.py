"""Where a service process waits: every asyncio task's await chain and every thread's stack, as text.

A process that hangs while its event loop still runs (a start-up step that never returns, a request
never answered) shows nothing in its log but the retries around it. ``kill -USR1 <pid>`` logs this
report (:func:`~ferry_schemas.runtime.lifecycle.serve` installs the handler), and a service whose
probes never reported ready logs it by itself once (:func:`watch_startup`).

``Task.get_stack()`` stops at a suspended coroutine's own frame; the report follows ``cr_await`` /
``gi_yieldfrom`` down to the innermost awaitable, which is the step the task waits on, and names
the future there (e.g. uvloop's ``getaddrinfo`` of ``create_server``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_DEPTH = 40
STARTUP_REPORT_AFTER = 60.0
"""Seconds after start a service whose probes never said ready logs where it waits."""


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """``file:line in function`` for each coroutine ``task`` is suspended in, outermost first, then
    the awaitable at the bottom."""
    lines: list[str] = []
    awaited: Any = task.get_coro()
    for _ in range(MAX_DEPTH):
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:  # a C awaitable: a future's iterator says less than the future itself
            waiter = getattr(task, "_fut_waiter", None)  # CPython's Task: the future it waits on
            lines.append(f"awaiting {waiter if waiter is not None else awaited!r}"[:300])
            break
        lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        inner = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        if inner is None:
            break
        awaited = inner
    return lines


def report(reason: str) -> str:
    """The whole report: each task of the running loop (if any), then each thread."""
    out = [f"where this process waits ({reason}):"]
    try:
        tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    except RuntimeError:  # no running loop
        tasks = []
    for task in tasks:
        out.append(f"task {task.get_name()}:")
        out.extend(f"    {line}" for line in await_chain(task))
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.append(f"thread {names.get(ident, ident)}:")
        out.extend(f"    {line.strip()}" for line in traceback.format_stack(frame)[-8:])
    return "\n".join(out)


def log_report(reason: str) -> None:
    log.warning("%s", report(reason))


async def watch_startup(ready: Callable[[], Awaitable[bool]], after: float = STARTUP_REPORT_AFTER) -> None:
    """Log :func:`report` once if ``ready()`` still says False ``after`` seconds from now."""
    await asyncio.sleep(after)
    if not await ready():
        log_report(f"not ready {after:g}s after start")
