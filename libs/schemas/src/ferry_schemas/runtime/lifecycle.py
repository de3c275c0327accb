"""How every service process starts and stops: logging, tracing, SIGTERM/SIGINT → a stop event."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from ferry_schemas.runtime.logs import configure_logging
from ferry_schemas.runtime.tracing import setup_tracing

__all__ = ["configure_logging", "serve", "stop_on_signals"]


class _Named(Protocol):
    @property
    def service(self) -> str: ...

    @property
    def log_level(self) -> str: ...


S = TypeVar("S", bound=_Named)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT (where the loop supports signal handlers)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def serve(settings: S, run: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    """Configure logging and tracing for ``settings.service``, then ``run`` until a stop signal."""
    configure_logging(settings.log_level, settings.service)
    provider = setup_tracing(settings.service)
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        await run(settings, stop)
    finally:
        provider.shutdown()
