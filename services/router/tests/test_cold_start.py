"""Scale from zero at the router: a request for a server with no ready endpoint is held, demand is
published, and the request is answered as soon as an endpoint appears (or 503 + Retry-After)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from ferry_router.app import Router
from ferry_router.cold_start import ColdStartHold
from ferry_router.observability import AccessLog
from ferry_router.proxy import UpstreamClient, UpstreamSettings
from ferry_router.ratelimit import RateLimiter
from ferry_router.scheduler import build_scheduler
from ferry_router.scheduler.config import parse_config
from ferry_router.state.table import RoutingTable
from ferry_schemas.autoscaling import Demand

from .fake_engine import free_port
from .objects import pod
from .test_app import CHAT, Harness, setup_model

Published = list[tuple[str, Demand]]


@pytest.fixture
async def held() -> AsyncIterator[tuple[Harness, ColdStartHold, Published]]:
    table = RoutingTable()
    published: Published = []

    async def publish(subject: str, data: bytes) -> None:
        published.append((subject, Demand.model_validate_json(data)))

    hold = ColdStartHold(table, publish, max_waiting=2, timeout=3.0, republish=0.5)
    scheduler = build_scheduler(parse_config("scheduler: {plugins: {Filter: {enabled: [least-request]}}}"))
    client = UpstreamClient(UpstreamSettings(connect_timeout=1.0, header_timeout=5.0))
    await client.start()
    router = Router(table, scheduler, RateLimiter(), client, AccessLog(enabled=False), cold_start=hold)
    runner = web.ServerRunner(router.build_server())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession()
    harness = Harness(table, f"http://127.0.0.1:{port}", free_port(), io.StringIO(), session, [])
    try:
        yield harness, hold, published
    finally:
        await session.close()
        for engine in harness.engines:
            await engine.stop()
        await runner.cleanup()
        await client.close()


async def test_held_request_is_answered_when_an_endpoint_appears(
    held: tuple[Harness, ColdStartHold, Published],
) -> None:
    harness, _, published = held
    await harness.engine("127.0.0.2")
    setup_model(harness)  # the server exists, no pod yet
    request = asyncio.create_task(harness.post("/v1/chat/completions", CHAT))
    for _ in range(100):  # bounded: the demand is published as soon as the request is held
        if published:
            break
        await asyncio.sleep(0.01)
    subject, demand = published[0]
    assert subject == "ferry.demand.default.srv"
    assert (demand.namespace, demand.server, demand.model, demand.selector) == (
        "default",
        "srv",
        "m",
        {"app": "m"},
    )
    assert not request.done()
    harness.table.apply_pod("default/p0", pod("p0", {"app": "m"}, "127.0.0.2"))
    status, body = await asyncio.wait_for(request, timeout=5)
    assert status == 200, body


async def test_wait_runs_out_with_503_and_retry_after(held: tuple[Harness, ColdStartHold, Published]) -> None:
    harness, hold, published = held
    hold.timeout = 1.2
    setup_model(harness)
    async with harness.session.post(harness.url + "/v1/chat/completions", json=CHAT) as response:
        body = await response.json()
        assert response.status == 503
        assert response.headers["Retry-After"] == "2"
    assert body["error"]["code"] == "no_endpoints"
    assert "none became ready within 1.2s" in body["error"]["message"]
    assert len(published) >= 2  # republished while waiting


async def test_full_queue_refuses_at_once(held: tuple[Harness, ColdStartHold, Published]) -> None:
    harness, hold, _ = held
    setup_model(harness)
    waiting = [asyncio.create_task(harness.post("/v1/chat/completions", CHAT)) for _ in range(2)]
    for _ in range(100):
        if hold._waiting.get("default/srv") == 2:
            break
        await asyncio.sleep(0.01)
    async with harness.session.post(harness.url + "/v1/chat/completions", json=CHAT) as response:
        assert response.status == 503
        assert "2 requests already wait" in (await response.json())["error"]["message"]
        assert response.headers["Retry-After"] == "3"
    for task in waiting:
        status, _ = await task
        assert status == 503
