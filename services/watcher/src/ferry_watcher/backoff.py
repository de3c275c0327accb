"""Exponential back-off with jitter for reconnect loops."""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """``initial`` doubling up to ``maximum``; :meth:`reset` after a success."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def reset(self) -> None:
        self._next = self.initial

    def delay(self) -> float:
        """The next delay (with ±20 % jitter) and advance."""
        current = self._next
        self._next = min(self.maximum, self._next * 2)
        return current * random.uniform(0.8, 1.2)

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay())
