"""Engine metrics scraped off the request path (spec §2.3): the fallback for engines without a
runtime sidecar pushing their load (``state/pushed_load.py``).

The scraper runs on its own thread with its own event loop and HTTP session, so neither the
scrape I/O nor parsing ever holds up the request loop (the loop only reads the numbers it writes;
each field is one atomic store). Each endpoint has its own schedule:

* a new endpoint is scraped at once (as in Kthena), then every ``interval`` with ±10 % jitter, and
  the first round after start is spread over one interval, so scrapes do not come in bursts;
* an endpoint whose sidecar pushed fresh load is not scraped; it is looked at again when that load
  would go stale if no newer push came (not every interval: at 20,000 pushing engines the
  per-interval checks alone were 20,000 heap operations a second);
* a failing endpoint (refused, hung, bad status) backs off: interval x 2^failures, at most
  ``max_backoff``. Engines whose last scrape succeeded are scraped in a lane of their own (at most
  ``concurrency`` at once); new and failing engines share a smaller one, so a hung engine (one
  slot for ``timeout``, once per back-off period) never delays the scrape of a healthy one. Each
  scrape has a short connect timeout and ``timeout`` in total;
* ``/v1/models`` is read only every ``models_every`` scrapes (and at once for a new endpoint).

Only the needed metric names are parsed (:func:`ferry_schemas.load.parse_exposition`); TTFT/TPOT
are the mean over the last interval with samples. ``ferry_router_engine_scrape_lag_seconds`` is
how late scrapes start against their schedule: it grows when the fleet outruns the scraper.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson
from ferry_schemas.load import parse_exposition, update_load
from prometheus_client import Counter, Gauge, Histogram

from ferry_router.state.table import Endpoint, EndpointMetrics, RoutingTable

log = logging.getLogger(__name__)

SCRAPES = Counter("ferry_router_engine_scrapes_total", "Engine metric scrapes.", ["result"])
LAG = Histogram(
    "ferry_router_engine_scrape_lag_seconds",
    "How late scrapes start against their schedule (grows when the scraper cannot keep up).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BACKING_OFF = Gauge(
    "ferry_router_engine_scrape_backoff_endpoints", "Endpoints whose scrapes are backing off."
)

JITTER = 0.1
T = TypeVar("T")


def apply_exposition(metrics: EndpointMetrics, text: str, inflight: int = 0) -> None:
    """Write a scrape into ``metrics``; ``inflight``: the router's in-flight count there now."""
    update_load(metrics, parse_exposition(text))
    metrics.inflight_at_sample = inflight
    metrics.scraped = True
    metrics.source = "scrape"
    metrics.updated = time.monotonic()
    metrics.stale = False


def backoff(interval: float, failures: int, limit: float) -> float:
    """Seconds until the next scrape of an endpoint that failed ``failures`` times in a row."""
    return float(min(interval * 2 ** min(failures, 16), max(limit, interval)))


@dataclass(slots=True)
class _Lane:
    """Scrapes that may run at once, and those due but waiting for room."""

    limit: int
    running: int = 0
    waiting: deque[tuple[float, Endpoint]] = field(default_factory=deque)


class MetricsScraper:
    """Scrapes the endpoints of ``table`` on a thread of its own (see the module docstring)."""

    def __init__(
        self,
        table: RoutingTable,
        *,
        interval: float = 1.0,
        timeout: float = 2.0,
        connect_timeout: float = 0.5,
        concurrency: int = 128,
        max_backoff: float = 60.0,
        models_every: int = 5,
        skip: Callable[[EndpointMetrics], float] | None = None,
    ) -> None:
        """``skip(metrics)``: seconds the endpoint's load stays known without a scrape (pushed;
        0: scrape it)."""
        self._table = table
        self.interval = interval
        self.max_backoff = max_backoff
        self.models_every = max(models_every, 1)
        self._skip = skip
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._concurrency = concurrency
        # Engines that answered last time have a lane of their own: hung and refusing engines (and
        # new ones, until they answer) queue in the other, so they never hold up a healthy one.
        self._healthy = _Lane(concurrency)
        self._probation = _Lane(max(concurrency // 4, 2))
        self._rng = random.Random()
        self._due: list[tuple[float, int, str]] = []  # (due time, tie-break, endpoint key)
        self._scheduled: dict[str, int] = {}  # endpoint key -> its live heap entry's tie-break
        self._ticket = 0
        self._scrapes: dict[str, int] = {}  # endpoint key -> scrapes done (for /v1/models)
        self._failing: set[str] = set()
        self._added: deque[str] = deque()  # endpoints added on the request loop, not yet scheduled
        self._added_handover = False  # a _take_added is queued on the scraper's loop
        self._closing = False
        self._began = False  # scraping started (:meth:`begin`)
        self._wake: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        table.endpoint_added.append(self._on_added)

    async def start(self, *, scrape: bool = True) -> None:
        """Start the thread; with ``scrape`` also the scraping (else :meth:`begin` does)."""
        self._loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._loop.run_forever, name="router-scraper", daemon=True)
        self.thread.start()
        await self.call(self._open())
        if scrape:
            await self.begin()

    async def begin(self) -> None:
        """Start scraping: the first round spread over one interval. The router calls it once its
        snapshot is read: scraping the snapshot's endpoints while it is read only delayed
        ``/readyz`` (and most of those engines push their load anyway)."""
        await self.call(self._begin())

    async def _open(self) -> None:
        """On the scraper's loop: its session."""
        self._wake = asyncio.Event()
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self._concurrency, keepalive_timeout=30),
        )

    async def _begin(self) -> None:
        """On the scraper's loop: the first (spread) round and the scheduler."""
        if self._began:
            return
        self._began = True
        self._added.clear()  # all of them are in the first round
        now = time.monotonic()
        for endpoint in self._table.endpoints_copy():
            self._schedule(endpoint.key, now + self._rng.uniform(0, self.interval))
        asyncio.get_running_loop().create_task(self._run(), name="router-scraper")

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the scraper's thread and loop (what must not load the request loop)."""
        assert self._loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _on_added(self, endpoint: Endpoint) -> None:
        """A new endpoint is scraped at once (Kthena does the same), on the scraper's thread.

        Called on the request loop for every endpoint of a snapshot (tens of thousands at start):
        it only queues the key; one hand-over per burst takes the queue to the scraper's loop."""
        loop = self._loop
        if loop is None or not loop.is_running() or not self._began:
            return  # before begin(): its first round takes every endpoint
        self._added.append(endpoint.key)
        if not self._added_handover:
            self._added_handover = True
            loop.call_soon_threadsafe(self._take_added)

    def _take_added(self) -> None:
        """On the scraper's loop: schedule the endpoints added since the last hand-over. A burst
        larger than the probation lane (a snapshot) is spread over one interval, as the first round
        is, instead of queueing thousands of scrapes at once."""
        self._added_handover = False
        keys: list[str] = []
        while self._added:
            keys.append(self._added.popleft())
        now = time.monotonic()
        spread = self.interval if len(keys) > self._probation.limit else 0.0
        for key in keys:
            self._scrapes.pop(key, None)
            self._schedule(key, now + (self._rng.uniform(0, spread) if spread else 0.0))

    def _schedule(self, key: str, due: float) -> None:
        self._ticket += 1
        self._scheduled[key] = self._ticket
        heapq.heappush(self._due, (due, self._ticket, key))
        if self._wake is not None and self._due[0][1] == self._ticket:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                due, ticket, key = heapq.heappop(self._due)
                if self._scheduled.get(key) != ticket:
                    continue  # rescheduled since
                endpoint = self._table.endpoints.get(key)
                if endpoint is None:
                    del self._scheduled[key]
                    self._scrapes.pop(key, None)
                    self._failing.discard(key)
                    continue
                fresh_for = self._skip(endpoint.metrics) if self._skip is not None else 0.0
                if fresh_for > 0:
                    self._schedule(key, now + max(fresh_for, self._jittered(self.interval)))
                    continue
                m = endpoint.metrics
                lane = self._healthy if m.source == "scrape" and not m.failures else self._probation
                lane.waiting.append((due, endpoint))
                self._dispatch(lane)
            self._wake.clear()
            delay = self._due[0][0] - now if self._due else self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(delay, 0.001))

    def _dispatch(self, lane: _Lane) -> None:
        """Start what ``lane`` has room for; a scrape that ends makes room for the next."""
        while not self._closing and lane.waiting and lane.running < lane.limit:
            due, endpoint = lane.waiting.popleft()
            if self._table.endpoints.get(endpoint.key) is not endpoint:
                continue
            lane.running += 1
            LAG.observe(max(time.monotonic() - due, 0.0))
            task = asyncio.get_running_loop().create_task(self._scrape_then_schedule(endpoint))
            task.add_done_callback(functools.partial(self._finished, lane))

    def _finished(self, lane: _Lane, _: asyncio.Task[None]) -> None:
        lane.running -= 1
        self._dispatch(lane)

    def _jittered(self, seconds: float) -> float:
        return seconds * self._rng.uniform(1 - JITTER, 1 + JITTER)

    async def _scrape_then_schedule(self, endpoint: Endpoint) -> None:
        try:
            await self.scrape(endpoint)
        except Exception:
            log.exception("scrape of %s failed", endpoint.key)
        failures = endpoint.metrics.failures
        wait = backoff(self.interval, failures, self.max_backoff) if failures else self.interval
        if self._table.endpoints.get(endpoint.key) is endpoint:
            self._schedule(endpoint.key, time.monotonic() + self._jittered(wait))
        if failures:
            self._failing.add(endpoint.key)
        else:
            self._failing.discard(endpoint.key)
        BACKING_OFF.set(len(self._failing))

    async def scrape_all(self) -> None:
        """Scrape every endpoint once, now (tests and benchmarks)."""
        endpoints = self._table.endpoints_copy()
        if endpoints:
            await asyncio.gather(*(self.scrape(e) for e in endpoints))

    async def scrape(self, endpoint: Endpoint) -> None:
        base = f"http://{endpoint.pod.ip}:{endpoint.port}"
        count = self._scrapes.get(endpoint.key, 0)
        self._scrapes[endpoint.key] = count + 1
        read_models = endpoint.metrics.models is None or count % self.models_every == 0
        try:
            text = await self._get(f"{base}/metrics")
        except Exception as exc:
            endpoint.metrics.failures += 1
            SCRAPES.labels("error").inc()
            log.debug("scrape of %s failed: %r", endpoint.key, exc)
            return
        apply_exposition(endpoint.metrics, text, endpoint.inflight)
        endpoint.metrics.failures = 0
        SCRAPES.labels("ok").inc()
        if read_models:
            try:
                data = orjson.loads(await self._get(f"{base}/v1/models")).get("data") or []
                endpoint.metrics.models = frozenset(str(m["id"]) for m in data if "id" in m)
                endpoint.metrics.base_models = tuple(
                    str(m["id"]) for m in data if "id" in m and not m.get("parent")
                )
            except Exception as exc:
                log.debug("bad /v1/models from %s: %r", endpoint.key, exc)

    async def _get(self, url: str) -> str:
        assert self._session is not None
        async with self._session.get(url) as response:
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}")
            return await response.text()

    async def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._close(), loop))
        loop.call_soon_threadsafe(loop.stop)
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 5)
        loop.close()

    async def _close(self) -> None:
        self._closing = True
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # scrapes in flight end before the loop
        if self._session is not None:
            await self._session.close()
