"""How every service process starts and stops: its event loop, logging, tracing, SIGTERM/SIGINT → stop,
SIGUSR1 → a report of where every task waits (also logged once when start-up does not finish)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from ferry_schemas.runtime.logs import configure_logging
from ferry_schemas.runtime.probes import all_ready
from ferry_schemas.runtime.settings import env_float
from ferry_schemas.runtime.stacks import STARTUP_REPORT_AFTER, log_report, watch_startup
from ferry_schemas.runtime.tasks import cancel_all
from ferry_schemas.runtime.tracing import setup_tracing

__all__ = ["configure_logging", "run_main", "serve", "settle_heap", "stop_on_signals"]

YOUNG_GENERATION = 10_000
"""Allocations between two young collections (CPython's default is 700)."""


class _Named(Protocol):
    @property
    def service(self) -> str: ...

    @property
    def log_level(self) -> str: ...


S = TypeVar("S", bound=_Named)
T = TypeVar("T")


def run_main(main: Coroutine[Any, Any, T]) -> T:
    """Run a service process's main coroutine to the end on uvloop (asyncio's loop where it is missing).

    uvloop's run loop, TCP and TLS transports are C: the control services spend most of their CPU
    in the loop and in TLS per API request and NATS message, and on uvloop they use 8 % less of it
    (``bench/reconcile/README.md``); the router measured it first.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT (where the loop supports signal handlers)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def settle_heap() -> None:
    """Take what start-up built (modules, settings, clients: alive as long as the process) out of the
    cyclic collector's way, and collect the young generation every 10,000 allocations, not 700.

    A service's burst allocates messages, tasks and parsed objects by the thousand, and CPython
    collected the young generation so often that the collector's own walk was 7 % of the applier's
    CPU and 8 to 12 % of the watcher's and the converter's (perf, 200 boosters); most of what a
    collection found alive was start-up's objects or work still in flight.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, 10, 10)


def report_on_sigusr1() -> None:
    """``kill -USR1 <pid>`` logs where every task and thread of the process waits."""
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_report, "SIGUSR1")


async def serve(settings: S, run: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    """Configure logging and tracing for ``settings.service``, settle the heap, then ``run`` until a
    stop signal. A process whose probes do not say ready within ``FERRY_STARTUP_REPORT_AFTER``
    seconds (60) logs where it waits, once."""
    configure_logging(settings.log_level, settings.service)
    provider = setup_tracing(settings.service)
    settle_heap()
    stop = asyncio.Event()
    stop_on_signals(stop)
    report_on_sigusr1()
    after = env_float("FERRY_STARTUP_REPORT_AFTER", STARTUP_REPORT_AFTER)
    watch = asyncio.create_task(watch_startup(all_ready, after), name="startup-watch")
    try:
        await run(settings, stop)
    finally:
        await cancel_all([watch])
        provider.shutdown()
