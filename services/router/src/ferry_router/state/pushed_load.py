"""Engine load pushed by the runtime sidecars (``FERRY_LOAD``) into the routing table's endpoints.

The messages are read and decoded by a child process (``state/load_reader.py``), which hands the
newest reading of every pod that changed to the scraper's thread in one batch every 0.1 s: a
fleet's worth of load messages never competes with route changes and requests for the router's
GIL, and the router's own work is a few µs per changed pod.

Every router replica reads the last message per pod and writes it into the pod's
:class:`EndpointMetrics` (``source = "push"``); the scraper leaves an
endpoint with fresh pushed load alone. Once a second the sweep clears load older than
``stale_after`` -- pushed or scraped -- to unknown (:meth:`EndpointMetrics.forget_load`), so an engine
whose sidecar stopped and that cannot be scraped either is not routed to on a frozen reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ferry_router.state.load_reader import LoadFeed, PushedReading
from ferry_router.state.table import Endpoint, EndpointMetrics, RoutingTable

log = logging.getLogger(__name__)


class Reading(Protocol):
    """What the router takes of a pushed load (a :class:`PushedReading`, or an ``EngineLoad``)."""

    @property
    def kv_cache_usage(self) -> float: ...
    @property
    def waiting(self) -> float: ...
    @property
    def running(self) -> float: ...
    @property
    def ttft(self) -> float: ...
    @property
    def tpot(self) -> float: ...
    @property
    def models(self) -> Sequence[str] | None: ...
    @property
    def base_models(self) -> Sequence[str]: ...


def apply_pushed(metrics: EndpointMetrics, load: Reading, received: float, inflight: int = 0) -> None:
    """Write a pushed reading into ``metrics``; ``inflight``: the router's in-flight count there now."""
    if received < metrics.updated:
        return  # a scrape read this engine after the sidecar did
    metrics.inflight_at_sample = inflight
    metrics.kv_cache_usage = load.kv_cache_usage
    metrics.waiting = load.waiting
    metrics.running = load.running
    if load.ttft > 0:
        metrics.ttft = load.ttft
    if load.tpot > 0:
        metrics.tpot = load.tpot
    if load.models is not None:
        metrics.models = frozenset(load.models)
        metrics.base_models = tuple(load.base_models)
    metrics.scraped = True
    metrics.source = "push"
    metrics.updated = received
    metrics.stale = False


def sweep(table: RoutingTable, now: float, stale_after: float) -> int:
    """Clear load older than ``stale_after``; returns how many endpoints have no fresh load."""
    unknown = 0
    for endpoint in table.endpoints_copy():
        m = endpoint.metrics
        if not m.updated or now - m.updated > stale_after:
            if m.updated and not m.stale:
                log.info("load of %s is %.1fs old: unknown now", endpoint.key, now - m.updated)
                m.forget_load()
            unknown += 1
    return unknown


class PushedLoad:
    """Feeds ``table`` from ``board`` and ages load out (see the module docstring)."""

    def __init__(
        self,
        table: RoutingTable,
        board: LoadFeed,
        *,
        sweep_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.board = board
        self.sweep_interval = sweep_interval
        self.unknown = 0  # endpoints without fresh load at the last sweep
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        board.callbacks.append(self._on_load)
        table.endpoint_added.append(self._on_added)

    @property
    def stale_after(self) -> float:
        return self.board.stale_after

    def is_fresh(self, metrics: EndpointMetrics) -> bool:
        """Pushed load recent enough that the scraper need not read this engine."""
        return self.fresh_for(metrics) > 0

    def fresh_for(self, metrics: EndpointMetrics) -> float:
        """Seconds until this engine's pushed load goes stale unless a newer one comes (0: not
        pushed, or stale already): when the scraper needs to look at it again."""
        if metrics.source != "push":
            return 0.0
        return max(self.stale_after - (self._clock() - metrics.updated), 0.0)

    def _on_load(self, key: str, load: PushedReading, received: float) -> None:
        endpoint = self.table.endpoints.get(key)
        if endpoint is not None:
            apply_pushed(endpoint.metrics, load, received, endpoint.inflight)

    def _on_added(self, endpoint: Endpoint) -> None:
        load, age = self.board.fresh(endpoint.key), self.board.age(endpoint.key)
        if load is not None and age is not None:
            apply_pushed(endpoint.metrics, load, self._clock() - age, endpoint.inflight)

    async def start(self) -> None:
        await self.board.start()
        self._task = asyncio.create_task(self._sweep(), name="router-load-sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.board.stop()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                self.unknown = sweep(self.table, self._clock(), self.stale_after)
                self.board.prune()
            except Exception:
                log.exception("load sweep failed")
