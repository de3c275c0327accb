"""One per-model admission queue, shared by the fairness queue (§10) and session boost (§11).

A request waits in a heap ordered by a key its policy chooses until the policy's dispatcher admits
it; it waits at most ``timeout`` seconds (504 ``Request processing timed out in queue``), and one
whose client has gone is dropped when its turn comes (503 ``Client disconnected while waiting in
queue``). A request admitted at the very moment it timed out still runs, so no admission is lost
and ``release`` is always paired with an admission.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from ferry_router import errors
from ferry_router.durations import parse_duration

log = logging.getLogger(__name__)
Publish = Callable[[str, bytes], Awaitable[None]]


# --- Kthena's queue settings: an invalid value falls back to the default with a warning ----------


def env_enabled(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def env_duration(
    name: str, default: float, *, low: float = 0.0, high: float = math.inf, signed: bool = False
) -> float:
    """A Go duration in ``(low, high]``; ``signed`` accepts a leading ``-`` and skips the range."""
    raw = os.environ.get(name)
    if not raw:
        return default
    negative = signed and raw.startswith("-")
    try:
        value = parse_duration(raw[1:] if negative else raw)
    except ValueError:
        log.warning("%s=%r is not a duration; using %ss", name, raw, default)
        return default
    if negative:
        return -value
    if not signed and not low < value <= high:
        log.warning("%s=%r out of range; using %ss", name, raw, default)
        return default
    return value


def env_number(name: str, default: float) -> float:
    """A finite number >= 0."""
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, raw, default)
        return default
    if not math.isfinite(value) or value < 0:
        log.warning("%s=%r must be finite and >= 0; using %s", name, raw, default)
        return default
    return value


def env_count(name: str, default: int) -> int:
    """A positive integer."""
    raw = os.environ.get(name)
    try:
        value = int(raw) if raw else default
    except ValueError:
        value = 0
    if value <= 0:
        if raw:
            log.warning("%s=%r must be a positive integer; using %d", name, raw, default)
        return default
    return value


async def share(publish: Publish | None, subject: str, message: dict[str, Any]) -> None:
    """Tell the other router replicas (core NATS, best effort: this replica already has it)."""
    if publish is None:
        return
    try:
        await publish(subject, orjson.dumps(message))
    except Exception as exc:
        log.warning("publish on %s failed: %r", subject, exc)


@dataclass(order=True)
class Entry:
    key: tuple[Any, ...]
    admitted: asyncio.Future[None] = field(compare=False)
    gone: Callable[[], bool] = field(compare=False)


@dataclass(frozen=True)
class QueueMetrics:
    """The label-bound metric children of one queue (``size`` gauge, ``waited`` histogram…)."""

    size: Any
    waited: Any
    cancelled: Any
    dequeued: Any
    inflight: Any


class AdmissionQueue:
    """The waiting heap, the bounded wait and the in-flight count; subclasses run ``dispatch``."""

    def __init__(self, name: str, timeout: float, metrics: QueueMetrics) -> None:
        self.name = name
        self.timeout = timeout
        self.metrics = metrics
        self.heap: list[Entry] = []
        self._seq = itertools.count()
        self.wake = asyncio.Event()
        self.inflight = 0
        self._task = asyncio.get_running_loop().create_task(self.dispatch(), name=f"queue-{name}")

    async def enter(self, key: tuple[Any, ...], gone: Callable[[], bool]) -> None:
        """Wait for admission (``key`` orders the heap; a sequence number breaks ties FIFO)."""
        entry = Entry((*key, next(self._seq)), asyncio.get_running_loop().create_future(), gone)
        heapq.heappush(self.heap, entry)
        self.metrics.size.inc()
        self.wake.set()
        started = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.shield(entry.admitted), self.timeout if self.timeout > 0 else None)
        except TimeoutError:
            if not (entry.admitted.done() and not entry.admitted.cancelled()):
                entry.admitted.cancel()
                self.metrics.cancelled.inc()
                raise errors.queue_timeout() from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not entry.admitted.cancelled() or (task is not None and task.cancelling()):
                raise
            # the dispatcher found the client gone, or the model's last route went away
            raise errors.queue_client_gone() from None
        self.metrics.waited.observe(time.perf_counter() - started)

    def release(self) -> None:
        self.inflight -= 1
        self.metrics.inflight.set(self.inflight)
        self.wake.set()

    def pop(self) -> bool:
        """Admit the best waiting request; False when none is waiting."""
        while self.heap:
            entry = heapq.heappop(self.heap)
            self.metrics.size.dec()
            if entry.admitted.done():
                continue  # timed out meanwhile
            if entry.gone():
                entry.admitted.cancel()
                self.metrics.cancelled.inc()
                continue
            entry.admitted.set_result(None)  # the request now runs and calls release() when done
            self.inflight += 1
            self.metrics.inflight.set(self.inflight)
            self.metrics.dequeued.inc()
            return True
        return False

    async def idle(self) -> None:
        """Wait for an arrival or a release."""
        self.wake.clear()
        await self.wake.wait()

    async def dispatch(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._task.cancel()
        for entry in self.heap:
            if not entry.admitted.done():
                entry.admitted.cancel()
        self.heap.clear()


Q = TypeVar("Q", bound=AdmissionQueue)


class ModelQueues(Generic[Q]):
    """A queue per model, made on first use and closed (waiters cancelled) with the model's routes."""

    def __init__(self, make: Callable[[str], Q]) -> None:
        self._make = make
        self._queues: dict[str, Q] = {}

    def queue(self, model: str) -> Q:
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = self._make(model)
        return queue

    def models(self) -> list[str]:
        return list(self._queues)

    def forget_model(self, model: str) -> None:
        queue = self._queues.pop(model, None)
        if queue is not None:
            queue.close()

    def close(self) -> None:
        for queue in self._queues.values():
            queue.close()
        self._queues.clear()
