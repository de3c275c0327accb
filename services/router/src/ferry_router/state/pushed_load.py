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
from collections.abc import Callable

from ferry_schemas.runtime.load_board import LatestLoads

from ferry_router.state.load_reader import Load, LoadFeed
from ferry_router.state.table import Endpoint, EndpointMetrics, RoutingTable

log = logging.getLogger(__name__)


def apply_load(
    metrics: EndpointMetrics,
    received: float,
    kv: float,
    waiting: float,
    running: float,
    ttft: float,
    tpot: float,
    inflight: int = 0,
) -> None:
    """Write a pushed reading into ``metrics``; ``inflight``: the router's in-flight count there now."""
    if received > metrics.pushed:
        metrics.pushed = received  # the sidecar is alive: the scraper can leave this engine alone
    if received < metrics.updated:
        return  # a scrape read this engine after the sidecar did
    metrics.inflight_at_sample = inflight
    metrics.kv_cache_usage = kv
    metrics.waiting = waiting
    metrics.running = running
    if ttft > 0 and ttft != metrics.ttft:  # a new mean: that interval had samples
        metrics.ttft, metrics.ttft_load = ttft, running + waiting
    if tpot > 0 and tpot != metrics.tpot:
        metrics.tpot, metrics.tpot_load = tpot, running + waiting
    metrics.scraped = True
    metrics.source = "push"
    metrics.updated = received
    metrics.stale = False


Served = tuple[frozenset[str], tuple[str, ...]]
"""(every id ``/v1/models`` lists, the base models among them)."""


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
        # load and served models of pods not in the table (yet)
        self.unplaced: LatestLoads[Load] = LatestLoads(board.stale_after, clock)
        self.served: dict[str, Served] = {}  # pod key -> its engine's models (as pushed)
        self._interned: dict[tuple[tuple[str, ...], tuple[str, ...]], Served] = {}
        self.sweep_interval = sweep_interval
        self.unknown = 0  # endpoints without fresh load at the last sweep
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        board.sink = self
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
        if not metrics.pushed:
            return 0.0
        return max(self.stale_after - (self._clock() - metrics.pushed), 0.0)

    def loads(self, loads: list[tuple[str, float, float, float, float, float, float]]) -> None:
        """One batch into the endpoints' metrics; a pod not in the table yet is kept until it is
        (or until its load goes stale). Nothing else is kept per pod and batch."""
        endpoints = self.table.endpoints
        for key, received, kv, waiting, running, ttft, tpot in loads:
            endpoint = endpoints.get(key)
            if endpoint is not None:
                apply_load(endpoint.metrics, received, kv, waiting, running, ttft, tpot, endpoint.inflight)
            else:
                self.unplaced.put(key, (received, kv, waiting, running, ttft, tpot), received)

    def models(self, key: str, models: list[str], base_models: list[str]) -> None:
        """A pod's served models (sent when they change): kept per pod, shared between pods that
        serve the same (one set per model, not per pod)."""
        served = self._interned.setdefault(
            (tuple(models), tuple(base_models)), (frozenset(models), tuple(base_models))
        )
        self.served[key] = served
        endpoint = self.table.endpoints.get(key)
        if endpoint is not None:
            endpoint.metrics.models, endpoint.metrics.base_models = served

    def _on_added(self, endpoint: Endpoint) -> None:
        load = self.unplaced.pop(endpoint.key)
        if load is not None:
            apply_load(endpoint.metrics, *load, inflight=endpoint.inflight)
        served = self.served.get(endpoint.key)
        if served is not None:
            endpoint.metrics.models, endpoint.metrics.base_models = served

    def _prune(self) -> None:
        """Forget what pods that left (or whose sidecar stopped) pushed."""
        self.unplaced.prune()
        endpoints, unplaced = self.table.endpoints, self.unplaced
        for key in [k for k in self.served if k not in endpoints and unplaced.fresh(k) is None]:
            del self.served[key]
        if len(self._interned) > 2 * len(self.served) + 64:
            self._interned = {}  # sets no pod serves any more: the next pushes intern again

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
                self._prune()
            except Exception:
                log.exception("load sweep failed")
