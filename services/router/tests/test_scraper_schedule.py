"""The scraper's per-endpoint schedule: hung and refusing engines back off without delaying the
healthy ones, engines whose sidecar pushes fresh load are not scraped, and load ages out."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from ferry_router.metrics_scraper import MetricsScraper, backoff
from ferry_router.state.load_reader import decode
from ferry_router.state.pushed_load import apply_load, sweep
from ferry_router.state.table import EndpointMetrics, RoutingTable
from ferry_schemas.load import EngineLoad

from .fake_engine import FakeEngine, free_port
from .objects import pod, server

HUNG = [f"127.0.1.{i}" for i in range(1, 21)]
REFUSING = [f"127.0.2.{i}" for i in range(1, 21)]


@pytest.fixture
def hung_sockets() -> Iterator[tuple[int, list[socket.socket]]]:
    """Listening sockets nobody accepts on (the kernel completes the handshake; nothing answers)."""
    port = free_port()
    sockets = []
    for ip in HUNG:
        s = socket.socket()
        s.bind((ip, port))
        s.listen(64)
        sockets.append(s)
    try:
        yield port, sockets
    finally:
        for s in sockets:
            s.close()


async def test_hung_and_refusing_engines_do_not_delay_healthy_ones(
    hung_sockets: tuple[int, list[socket.socket]],
) -> None:
    port, _ = hung_sockets
    engine = FakeEngine("127.0.0.3", port)
    await engine.start()
    table = RoutingTable()
    table.apply_server("default/srv", server("srv", {"app": "m"}, port=port))
    table.apply_pod("default/healthy", pod("healthy", {"app": "m"}, "127.0.0.3"))
    # Hung scrapes take 20 s to time out and few may run at once: with one gather per cycle, or one
    # pool the hung engines fill, the healthy engine would wait for them.
    scraper = MetricsScraper(table, interval=0.05, timeout=20.0, concurrency=8, max_backoff=30.0)
    await scraper.start()
    try:
        async with asyncio.timeout(4):
            while engine.scrapes < 1:  # noqa: ASYNC110 (the scraper thread)
                await asyncio.sleep(0.02)
        for i, ip in enumerate(HUNG + REFUSING):  # then 40 engines join that never answer
            table.apply_pod(f"default/bad-{i}", pod(f"bad-{i}", {"app": "m"}, ip))
        then = engine.scrapes
        async with asyncio.timeout(15):  # before the first hung scrape times out
            while engine.scrapes < then + 20:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        healthy = table.endpoints["default/healthy"].metrics
        assert healthy.waiting == 7
        assert healthy.source == "scrape"
    finally:
        await scraper.stop()
        await engine.stop()


async def test_endpoints_with_fresh_pushed_load_are_not_scraped() -> None:
    engine = FakeEngine("127.0.0.4", free_port())
    await engine.start()
    table = RoutingTable()
    table.apply_server("default/srv", server("srv", {"app": "m"}, port=engine.port))
    table.apply_pod("default/pushed", pod("pushed", {"app": "m"}, "127.0.0.4"))
    load = EngineLoad(
        namespace="default", pod="pushed", model="m", epoch="e", seq=1, sent_at=time.time(), waiting=3
    )
    pushed = table.endpoints["default/pushed"].metrics
    pushed_at = time.monotonic()
    apply_load(pushed, *decode(load.to_bytes(), wall=load.sent_at, monotonic=pushed_at)[3])

    checks: list[float] = []

    def fresh_for(metrics: EndpointMetrics) -> float:
        """The pushed load stays fresh 2 s: the scraper looks again when it goes stale."""
        left = 2.0 - (time.monotonic() - metrics.updated) if metrics.source == "push" else 0.0
        checks.append(max(left, 0.0))
        return checks[-1]

    scraper = MetricsScraper(table, interval=0.05, skip=fresh_for)
    await scraper.start()
    try:
        async with asyncio.timeout(10):  # once the push is 2 s old the scrape takes over
            while pushed.source != "scrape":  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert pushed.waiting == 7
        assert pushed.updated - pushed_at >= 2.0  # not scraped while the push was fresh
        # looked at when the endpoint appeared and again once its push went stale, not every 50 ms
        assert checks[0] > 1.5
        assert len(checks) <= 3
    finally:
        await scraper.stop()
        await engine.stop()


def test_old_load_reads_as_unknown() -> None:
    table = RoutingTable()
    table.apply_server("default/srv", server("srv", {"app": "m"}))
    table.apply_pod("default/a", pod("a", {"app": "m"}, "127.0.0.5"))
    table.apply_pod("default/b", pod("b", {"app": "m"}, "127.0.0.6"))
    a, b = table.endpoints["default/a"].metrics, table.endpoints["default/b"].metrics
    load = EngineLoad(
        namespace="default", pod="a", model="m", epoch="e", seq=1, sent_at=0, waiting=9, ttft=0.4
    )
    endpoint = table.endpoints["default/a"]
    endpoint.inflight = 3
    apply_load(a, *decode(load.to_bytes(), wall=0, monotonic=100.0)[3], inflight=endpoint.inflight)
    endpoint.inflight = 5
    assert endpoint.unsampled == 2  # sent since the reading: the gauges cannot show them yet
    assert sweep(table, now=101.0, stale_after=5.0) == 1  # b was never measured
    assert (a.waiting, a.ttft, a.stale) == (9, 0.4, False)
    assert sweep(table, now=106.0, stale_after=5.0) == 2
    assert (a.waiting, a.ttft, a.stale) == (0, 0, True)
    assert endpoint.unsampled == 5  # load unknown: all the router has there is unseen
    assert not b.stale  # never measured: unknown, nothing to forget
    newer = load.model_copy(update={"seq": 2, "waiting": 1})
    apply_load(a, *decode(newer.to_bytes(), wall=0, monotonic=107.0)[3], inflight=5)
    assert (a.waiting, a.stale, a.source, endpoint.unsampled) == (1, False, "push", 0)


def test_pushed_latency_keeps_the_load_it_was_measured_at() -> None:
    """A sidecar repeats the last interval's mean until new samples come: the load that goes with it
    is the one of the reading where it changed."""
    metrics = EndpointMetrics()
    load = EngineLoad(
        namespace="default", pod="a", model="m", epoch="e", seq=1, sent_at=0, running=30, waiting=10,
        ttft=2.0, tpot=0.05,
    )  # fmt: skip
    apply_load(metrics, *decode(load.to_bytes(), wall=0, monotonic=100.0)[3])
    assert (metrics.ttft_load, metrics.tpot_load) == (40, 40)
    drained = load.model_copy(update={"seq": 2, "running": 2, "waiting": 0})  # same means: no new samples
    apply_load(metrics, *decode(drained.to_bytes(), wall=0, monotonic=101.0)[3])
    assert (metrics.running, metrics.ttft_load, metrics.tpot_load) == (2, 40, 40)
    fresh = drained.model_copy(update={"seq": 3, "ttft": 0.3})
    apply_load(metrics, *decode(fresh.to_bytes(), wall=0, monotonic=102.0)[3])
    assert (metrics.ttft, metrics.ttft_load, metrics.tpot_load) == (0.3, 2, 40)


def test_backoff_doubles_up_to_the_limit() -> None:
    assert [backoff(1.0, n, 30.0) for n in (1, 2, 3, 5, 10)] == [2.0, 4.0, 8.0, 30.0, 30.0]
