"""Engine metrics, scraped off the request path (spec §2.3).

The scraper runs on its own thread with its own event loop and HTTP session, so neither the
scrape I/O nor parsing the Prometheus text ever holds up the request loop (the loop only reads the
numbers it writes; each field is one atomic store). Every ``interval`` all endpoints are
scraped concurrently (at most ``concurrency`` at a time, each call bounded by ``timeout``):
``GET /metrics`` (Prometheus text) and ``GET /v1/models``. A new endpoint is scraped as soon
as it appears. Gauges take the last series of their family (0 when the family is absent);
TTFT/TPOT are the mean over the last interval computed from histogram ``_sum``/``_count``
deltas, and an interval without samples keeps the previous mean.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import orjson
from prometheus_client import Counter, Histogram

from ferry_router.state.table import Endpoint, EndpointMetrics, RoutingTable

log = logging.getLogger(__name__)

SCRAPES = Counter("ferry_router_engine_scrapes_total", "Engine metric scrapes.", ["result"])
CYCLE = Histogram(
    "ferry_router_engine_scrape_cycle_seconds",
    "Time to scrape every endpoint once.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

GAUGES = {
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage"),
    "waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs"),
    "running": ("vllm:num_requests_running", "sglang:num_running_reqs"),
}
HISTOGRAMS = {
    "ttft": ("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds"),
    "tpot": (
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
        "sglang:inter_token_latency_seconds",
    ),
}
_GAUGE_OF = {name: field for field, names in GAUGES.items() for name in names}
_HIST_OF = {name: field for field, names in HISTOGRAMS.items() for name in names}


def parse_exposition(text: str) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Gauge values (last series wins) and histogram (sum, count) summed over series."""
    gauges: dict[str, float] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            rest = line[line.rfind("}") + 1 :].split()
        else:
            parts = line.split()
            name, rest = parts[0], parts[1:]
        if not rest:
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        if name in _GAUGE_OF:
            gauges[_GAUGE_OF[name]] = value
        elif name.endswith("_sum") and name[:-4] in _HIST_OF:
            field = _HIST_OF[name[:-4]]
            sums[field] = sums.get(field, 0.0) + value
        elif name.endswith("_count") and name[:-6] in _HIST_OF:
            field = _HIST_OF[name[:-6]]
            counts[field] = counts.get(field, 0.0) + value
    hists = {f: (sums.get(f, 0.0), counts[f]) for f in counts}
    return gauges, hists


def interval_mean(previous: tuple[float, float] | None, now: tuple[float, float]) -> float:
    """Mean of the samples observed since ``previous`` (0 when none; whole mean after a reset)."""
    if previous is None:
        return 0.0
    dsum, dcount = now[0] - previous[0], now[1] - previous[1]
    if dcount < 0 or dsum < 0:
        return now[0] / now[1] if now[1] > 0 else 0.0
    return dsum / dcount if dcount > 0 else 0.0


def apply_exposition(metrics: EndpointMetrics, text: str) -> None:
    gauges, hists = parse_exposition(text)
    metrics.kv_cache_usage = gauges.get("kv_cache_usage", 0.0)
    metrics.waiting = gauges.get("waiting", 0.0)
    metrics.running = gauges.get("running", 0.0)
    for field in ("ttft", "tpot"):
        now = hists.get(field)
        if now is None:
            continue
        previous = getattr(metrics, f"{field}_hist")
        mean = interval_mean(previous, now)
        if mean > 0:
            setattr(metrics, field, mean)
        setattr(metrics, f"{field}_hist", now)
    metrics.scraped = True


class MetricsScraper:
    """Scrapes every endpoint of ``table`` each ``interval`` on a thread of its own."""

    def __init__(
        self,
        table: RoutingTable,
        *,
        interval: float = 1.0,
        timeout: float = 2.0,
        concurrency: int = 100,
    ) -> None:
        self._table = table
        self.interval = interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._concurrency = concurrency
        self._gate: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        table.endpoint_added.append(self._on_added)

    async def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._loop.run_forever, name="router-scraper", daemon=True)
        self.thread.start()
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._open(), self._loop))

    async def _open(self) -> None:
        """On the scraper's loop: its session, its gate and the periodic cycle."""
        self._gate = asyncio.Semaphore(self._concurrency)
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=30)
        )
        asyncio.get_running_loop().create_task(self._cycle(), name="router-scraper")

    def _submit(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None or not self._loop.is_running():
            coro.close()
            return
        asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _on_added(self, endpoint: Endpoint) -> None:
        """A new endpoint is scraped at once (Kthena does the same), on the scraper's thread."""
        self._submit(self.scrape(endpoint))

    async def _cycle(self) -> None:
        while True:
            started = time.perf_counter()
            try:
                await self.scrape_all()
            except Exception:
                log.exception("scrape cycle failed")
            elapsed = time.perf_counter() - started
            CYCLE.observe(elapsed)
            await asyncio.sleep(max(self.interval - elapsed, 0.05))

    def _endpoints(self) -> list[Endpoint]:
        """A copy of the table's endpoints, taken from this thread while the request loop may mutate it."""
        while True:
            try:
                return list(self._table.all_endpoints())
            except RuntimeError:  # the dict changed size during the copy: take it again
                continue

    async def scrape_all(self) -> None:
        endpoints = self._endpoints()
        if endpoints:
            await asyncio.gather(*(self.scrape(e) for e in endpoints))

    async def scrape(self, endpoint: Endpoint) -> None:
        assert self._session is not None
        assert self._gate is not None
        base = f"http://{endpoint.pod.ip}:{endpoint.port}"
        async with self._gate:
            metrics_text, models = await asyncio.gather(
                self._get(f"{base}/metrics"), self._get(f"{base}/v1/models"), return_exceptions=True
            )
        if isinstance(metrics_text, BaseException):
            endpoint.metrics.failures += 1
            SCRAPES.labels("error").inc()
            log.debug("scrape of %s failed: %r", endpoint.key, metrics_text)
        else:
            apply_exposition(endpoint.metrics, metrics_text)
            endpoint.metrics.failures = 0
            SCRAPES.labels("ok").inc()
        if not isinstance(models, BaseException):
            try:
                data = orjson.loads(models).get("data") or []
                endpoint.metrics.models = frozenset(str(m["id"]) for m in data if "id" in m)
                endpoint.metrics.base_models = tuple(
                    str(m["id"]) for m in data if "id" in m and not m.get("parent")
                )
            except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError):
                log.debug("bad /v1/models from %s", endpoint.key)

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
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not current:
                task.cancel()
        if self._session is not None:
            await self._session.close()
