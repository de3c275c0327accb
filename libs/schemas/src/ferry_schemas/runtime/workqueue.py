"""A keyed, coalescing work queue (controller-runtime's ``workqueue`` with its rate limiter).

* **Keyed and serial.** Reconciles of one key never overlap; at most ``workers`` keys run at once.
* **Coalescing.** Adds of a key that is waiting coalesce into one reconcile; adds while the key is
  being reconciled cause exactly one more reconcile afterwards, never one per add.
* **Never gives up.** A reconcile that raises is retried (same key, after a capped exponential
  back-off with jitter that grows per consecutive failure and resets on success), forever: the
  failure is logged and counted (``ferry_workqueue_retries_total``), never dropped. Errors that a
  retry cannot fix are not exceptions: reconcilers report them as a value (a ``Failed`` condition).
* **Waitable.** :meth:`WorkQueue.submit` returns once a reconcile of the key that *started after the
  call* succeeded, so a bus message can be acked only when its effect is in the cluster;
  :meth:`WorkQueue.add` and :meth:`WorkQueue.add_after` are fire-and-forget (resync, re-queues).
* ``settle`` waits briefly before each reconcile so that a burst of changes of one key (pods of a
  ServingGroup appearing one by one) becomes one reconcile.
* ``priority`` (lower first) orders keys waiting for a worker; equal priorities run in the order
  they were queued. The applier gives the owners of pods precedence over their own owners, so work
  already half done is finished before new work is started.

The OpenTelemetry context of the first add that queued a reconcile is handed to it, so the
reconcile continues the trace that caused it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from opentelemetry.context import Context
from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
Reconcile = Callable[[K, Context | None], Awaitable[None]]

ADDS = Counter("ferry_workqueue_adds_total", "Keys added (before coalescing).", ["queue"])
RECONCILES = Counter("ferry_workqueue_reconciles_total", "Reconciles run, by outcome.", ["queue", "outcome"])
RETRIES = Counter(
    "ferry_workqueue_retries_total", "Reconciles that failed and were scheduled again.", ["queue", "error"]
)
DEPTH = Gauge("ferry_workqueue_depth", "Keys waiting for or in a reconcile.", ["queue"])
BACKING_OFF = Gauge("ferry_workqueue_backing_off", "Keys waiting out a retry back-off.", ["queue"])
LATENCY = Histogram("ferry_workqueue_reconcile_seconds", "One reconcile.", ["queue"])


@dataclass(frozen=True)
class Backoff:
    """``base · 2^(failures-1)`` capped at ``cap``, times a jitter factor in ``[1 - jitter, 1]``."""

    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.2

    def delay(self, failures: int) -> float:
        raw = min(self.cap, self.base * (2 ** max(0, failures - 1)))
        return float(raw * (1.0 - self.jitter * random.random()))


@dataclass
class _KeyState:
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    """Futures of submits that a reconcile which has not started yet will satisfy."""
    queued: bool = False
    context: Context | None = None
    task: asyncio.Task[None] | None = None
    failures: int = 0
    timer: asyncio.TimerHandle | None = None


class WorkQueue(Generic[K]):
    """See the module docstring. ``name`` labels the metrics and logs."""

    def __init__(
        self,
        name: str,
        reconcile: Reconcile[K],
        *,
        workers: int = 8,
        settle: float = 0.0,
        backoff: Backoff | None = None,
        priority: Callable[[K], int] | None = None,
    ) -> None:
        self.name = name
        self._reconcile = reconcile
        self._settle = settle
        self._backoff = backoff or Backoff()
        self._priority = priority or (lambda _: 0)
        self._slots = PrioritySlots(max(1, workers))
        self._states: dict[K, _KeyState] = {}
        self._delayed = 0
        self._active = 0
        """Keys with a drain task: waiting to settle, for a worker, or reconciling."""
        self._idle_since = time.monotonic()
        self._closed = False

    def __len__(self) -> int:
        """Keys waiting for, in, or backing off from a reconcile, plus delayed adds not due yet."""
        return len(self._states) + self._delayed

    def idle_for(self) -> float:
        """Seconds since the last key waiting for a worker or reconciling was done, 0.0 while one is
        (keys backing off and delayed adds not due yet are not work now): what background writers
        such as the Event recorder yield to."""
        return 0.0 if self._active else time.monotonic() - self._idle_since

    def __contains__(self, key: object) -> bool:
        return key in self._states

    def wants_context(self, key: K) -> bool:
        """Whether an add of ``key`` now would hand its trace context to a reconcile (none of ``key``
        is queued yet, or the one queued has none): a caller whose context costs something to build
        (read off a message's headers) builds it only then."""
        state = self._states.get(key)
        return state is None or not state.queued or state.context is None

    def failures(self, key: K) -> int:
        """Consecutive failed reconciles of ``key`` (0 when it is not failing)."""
        state = self._states.get(key)
        return state.failures if state else 0

    async def submit(self, key: K, context: Context | None = None) -> None:
        """Queue ``key`` and wait until a reconcile that started after this call succeeded."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state = self._queue(key, context)
        state.waiters.append(future)
        await asyncio.shield(future)

    def add(self, key: K, context: Context | None = None) -> None:
        """Queue ``key`` (coalescing with a pending reconcile); do not wait."""
        self._queue(key, context)

    def add_after(self, key: K, delay: float, context: Context | None = None) -> None:
        """Queue ``key`` after ``delay`` seconds (a pending back-off is not shortened)."""
        if delay <= 0:
            self.add(key, context)
            return
        self._delayed += 1
        asyncio.get_running_loop().call_later(delay, self._due, key, context)

    def _due(self, key: K, context: Context | None) -> None:
        self._delayed -= 1
        if not self._closed:
            self._queue(key, context)

    async def stop(self) -> None:
        """Stop scheduling; cancel reconciles in flight and back-off timers."""
        self._closed = True
        tasks = []
        for state in self._states.values():
            if state.timer is not None:
                state.timer.cancel()
            if state.task is not None:
                state.task.cancel()
                tasks.append(state.task)
            for waiter in state.waiters:
                if not waiter.done():
                    waiter.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._states.clear()
        self._active = 0
        DEPTH.labels(self.name).set(0)

    # ------------------------------------------------------------------ internals

    def _queue(self, key: K, context: Context | None) -> _KeyState:
        ADDS.labels(self.name).inc()
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _KeyState()
            DEPTH.labels(self.name).set(len(self._states))
        if not state.queued:
            state.queued = True
            state.context = context
        elif state.context is None:
            state.context = context  # a queued reconcile without a trace (resync) joins this one
        if state.task is None and state.timer is None and not self._closed:
            self._spawn(key, state)
        return state

    def _spawn(self, key: K, state: _KeyState) -> None:
        self._active += 1  # until the drain's end (or stop: a task cancelled before it ran ends no drain)
        state.task = asyncio.create_task(self._drain(key, state), name=f"{self.name}:{key}")

    async def _drain(self, key: K, state: _KeyState) -> None:
        try:
            while state.queued and not self._closed:
                if self._settle:
                    await asyncio.sleep(self._settle)  # let a burst of changes join this reconcile
                await self._slots.acquire(self._priority(key))
                # taken once a worker is free: adds made while waiting for one join this reconcile
                waiters, context = state.waiters, state.context
                state.waiters, state.context, state.queued = [], None, False
                started = time.perf_counter()
                try:
                    await self._reconcile(key, context)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    LATENCY.labels(self.name).observe(time.perf_counter() - started)
                    self._failed(key, state, exc, waiters, context)
                    return
                finally:
                    self._slots.release()
                LATENCY.labels(self.name).observe(time.perf_counter() - started)
                RECONCILES.labels(self.name, "ok").inc()
                if state.failures:
                    log.info("%s: %s reconciled after %d failed attempts", self.name, key, state.failures)
                    state.failures = 0
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        finally:
            self._active -= 1
            if not self._active:
                self._idle_since = time.monotonic()
            state.task = None
            self._forget_if_idle(key, state)

    def _failed(
        self,
        key: K,
        state: _KeyState,
        exc: Exception,
        waiters: list[asyncio.Future[None]],
        context: Context | None,
    ) -> None:
        """Keep the waiters, schedule the key again after the back-off."""
        state.failures += 1
        delay = self._backoff.delay(state.failures)
        RECONCILES.labels(self.name, "error").inc()
        RETRIES.labels(self.name, type(exc).__name__).inc()
        log.warning(
            "%s: reconcile of %s failed (attempt %d), retrying in %.2fs: %s: %s",
            self.name,
            key,
            state.failures,
            delay,
            type(exc).__name__,
            exc,
            exc_info=state.failures == 1 and not _expected(exc),
        )
        state.waiters = waiters + state.waiters
        state.queued = True
        if state.context is None:
            state.context = context
        BACKING_OFF.labels(self.name).inc()
        state.timer = asyncio.get_running_loop().call_later(delay, self._retry, key, state)

    def _retry(self, key: K, state: _KeyState) -> None:
        BACKING_OFF.labels(self.name).dec()
        state.timer = None
        if self._closed or self._states.get(key) is not state:
            return
        if state.task is None:
            self._spawn(key, state)

    def _forget_if_idle(self, key: K, state: _KeyState) -> None:
        if not state.queued and state.task is None and state.timer is None and self._states.get(key) is state:
            del self._states[key]
            DEPTH.labels(self.name).set(len(self._states))


class PrioritySlots:
    """A semaphore that hands a freed slot to the waiter of the lowest priority (first come first
    among equals), not simply to the longest waiting one like :class:`asyncio.Semaphore`."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def acquire(self, priority: int = 0) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrivals), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed a slot at the moment of cancellation: pass it on
            raise  # a cancelled waiter left in the heap is skipped by release()

    def release(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1


def _expected(exc: Exception) -> bool:
    """Connection trouble and API-server answers need no traceback; anything else might be a bug."""
    return isinstance(exc, OSError | TimeoutError) or type(exc).__name__ in {
        "ApiException",
        "ApiError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "TransientError",
        "LeaseBusy",
    }
