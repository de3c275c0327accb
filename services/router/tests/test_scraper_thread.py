"""The scraper works on a thread of its own: the request loop never waits for a scrape or a parse."""

from __future__ import annotations

import asyncio
import threading

import pytest
from ferry_router import metrics_scraper
from ferry_router.metrics_scraper import MetricsScraper
from ferry_router.state.table import RoutingTable

from .fake_engine import FakeEngine, free_port
from .objects import pod, server


async def test_scrapes_and_parses_run_on_the_scraper_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine("127.0.0.2", free_port())
    await engine.start()
    table = RoutingTable()
    table.apply_server("default/srv", server("srv", {"app": "m"}, port=engine.port))
    table.apply_pod("default/p0", pod("p0", {"app": "m"}, "127.0.0.2"))
    parsed_on: list[threading.Thread] = []
    real = metrics_scraper.apply_exposition

    def spy(metrics: metrics_scraper.EndpointMetrics, text: str, inflight: int = 0) -> None:
        parsed_on.append(threading.current_thread())
        real(metrics, text, inflight)

    monkeypatch.setattr(metrics_scraper, "apply_exposition", spy)
    scraper = MetricsScraper(table, interval=0.05)
    await scraper.start()
    try:
        (endpoint,) = table.all_endpoints()
        async with asyncio.timeout(10):
            while endpoint.metrics.waiting != 7 or len(parsed_on) < 3:  # noqa: ASYNC110 (set by another thread)
                await asyncio.sleep(0.02)
        assert endpoint.metrics.models == frozenset({"served"})
        assert scraper.thread is not None
        assert scraper.thread is not threading.current_thread()
        assert set(parsed_on) == {scraper.thread}
    finally:
        await scraper.stop()
        await engine.stop()
    assert not scraper.thread.is_alive()
