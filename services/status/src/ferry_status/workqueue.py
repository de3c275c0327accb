"""A per-key work queue in the controller-runtime style: requests for one key coalesce.

``submit(key)`` returns once a reconcile of ``key`` that started *after* the call has finished
(or raises its error), so a message is acked only after its effect is in the cluster. Reconciles
of one key never overlap; at most ``workers`` keys reconcile at once. ``settle`` waits briefly
before each reconcile so that a burst of changes (pods of one ServingGroup appearing one by one)
becomes one status write instead of several.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from opentelemetry.context import Context

K = TypeVar("K", bound=Hashable)
Reconcile = Callable[[K, Context | None], Awaitable[None]]


@dataclass
class _KeyState:
    pending: asyncio.Future[None] | None = None
    context: Context | None = None
    task: asyncio.Task[None] | None = None


class KeyedQueue(Generic[K]):
    def __init__(self, reconcile: Reconcile[K], workers: int = 8, settle: float = 0.0) -> None:
        self._reconcile = reconcile
        self._settle = settle
        self._slots = asyncio.Semaphore(workers)
        self._states: dict[K, _KeyState] = {}

    def __len__(self) -> int:
        return len(self._states)

    async def submit(self, key: K, context: Context | None = None) -> None:
        state = self._states.setdefault(key, _KeyState())
        if state.pending is None:
            state.pending = asyncio.get_running_loop().create_future()
            state.context = context
            if state.task is None:
                state.task = asyncio.create_task(self._drain(key, state))
        future = state.pending
        await asyncio.shield(future)

    async def _drain(self, key: K, state: _KeyState) -> None:
        try:
            while state.pending is not None:
                if self._settle:
                    await asyncio.sleep(self._settle)  # let a burst of changes join this reconcile
                future, context = state.pending, state.context
                state.pending, state.context = None, None
                async with self._slots:
                    try:
                        await self._reconcile(key, context)
                    except Exception as exc:
                        future.set_exception(exc)
                    else:
                        future.set_result(None)
        finally:
            state.task = None
            if state.pending is None and self._states.get(key) is state:
                del self._states[key]
