"""Router resilience on the real bus and real mock engines, driven by the official ``openai`` client:
a stalled stream is cut with an error event, the upstream pool is bounded, SIGTERM drains.

Each test starts its own router process (the settings differ) and engines whose token timing makes
the behaviour observable: a huge inter-token latency is a stall, a small one a long stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request

import openai
import pytest
from ferry_local.readiness import free_port

from tests.support.router_world import (
    CHAT,
    Engine,
    RouterProcess,
    World,
    model_route,
    model_server,
    ns,
    status_of,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def serve(bus: World, router: RouterProcess, engines: list[Engine]) -> str:
    """One ModelServer over ``engines``, one route; returns the model name to ask for."""
    namespace = ns()
    model = f"res-{namespace}"
    for engine in engines:
        engine.wait_up()
    server = model_server(namespace, "srv", {"app": namespace}, engines[0].port, model="m")
    await bus.publish("modelservers", server)
    rules = [{"targetModels": [{"modelServerName": "srv"}]}]
    await bus.publish("modelroutes", model_route(namespace, "route", {"modelName": model, "rules": rules}))
    for i, engine in enumerate(engines):
        await bus.pod(namespace, f"pod-{i}", {"app": namespace}, engine.host)
    router.wait_endpoints(namespace, "srv", len(engines))
    router.wait_model(model)
    return model


def metric_value(router: RouterProcess, name: str, labels: str = "") -> float:
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)}\s+([0-9.e+-]+)$", re.MULTILINE)
    found = pattern.search(router.metrics())
    return float(found.group(1)) if found else 0.0


async def test_a_stalled_stream_ends_with_an_error_event_and_a_metric(bus: World) -> None:
    router = bus.router(name="router-stall", env={"FERRY_ROUTER_IDLE_TIMEOUT": "1s"})
    # the first token comes at once, the next one only after 60 s: the stream stalls after one chunk
    engine = bus.engine("stall", "m", free_port(), "--inter-token-latency", "60s")
    model = await serve(bus, router, [engine])
    client = router.client()
    started = time.monotonic()
    received = 0
    stream = await client.chat.completions.create(model=model, messages=CHAT, stream=True)  # type: ignore[arg-type]

    async def read_all() -> None:
        nonlocal received
        async for chunk in stream:
            received += bool(chunk.choices)

    with pytest.raises(openai.APIError, match="sent nothing for 1s"):
        await read_all()
    assert received >= 1, "the stream should have started before it stalled"
    assert time.monotonic() - started < 20, "the stall was not cut by the idle timeout"
    assert metric_value(router, "ferry_router_upstream_stream_errors_total", '{reason="idle_timeout"}') == 1


async def test_the_upstream_connection_pool_is_bounded(bus: World) -> None:
    router = bus.router(name="router-pool", env={"FERRY_ROUTER_MAX_CONNECTIONS_PER_HOST": "2"})
    engine = bus.engine("pool", "m", free_port(), "--inter-token-latency", "50ms")
    model = await serve(bus, router, [engine])
    client = router.client()

    async def stream() -> int:
        chunks = 0
        async for chunk in await client.chat.completions.create(
            model=model, messages=CHAT, stream=True, max_tokens=12
        ):  # type: ignore[arg-type]
            chunks += bool(chunk.choices and chunk.choices[0].delta.content)
        return chunks

    streams = asyncio.gather(*(stream() for _ in range(8)))
    in_use: list[float] = []
    while not streams.done():
        in_use.append(metric_value(router, "ferry_router_upstream_connections_in_use"))
        await asyncio.sleep(0.05)
    assert all(n == 12 for n in await streams), "every request waited for a connection and completed"
    assert max(in_use) == 2, f"connections in use over time: {sorted(set(in_use))}"


async def test_sigterm_drains_unready_first_then_finishes_in_flight_streams(bus: World) -> None:
    router = bus.router(name="router-drain", env={"FERRY_ROUTER_DRAIN_PERIOD": "2s", "DRAIN_TIMEOUT": "30s"})
    engine = bus.engine("drain", "m", free_port(), "--inter-token-latency", "200ms")
    model = await serve(bus, router, [engine])
    client = router.client()
    pieces: list[str] = []
    finished: list[str] = []

    async def long_stream() -> None:
        async for chunk in await client.chat.completions.create(
            model=model, messages=CHAT, stream=True, max_tokens=25
        ):  # type: ignore[arg-type]
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                if chunk.choices[0].finish_reason:
                    finished.append(chunk.choices[0].finish_reason)

    stream = asyncio.create_task(long_stream())
    await asyncio.to_thread(wait_until, lambda: len(pieces) >= 2, "the stream to start")
    os.kill(router.process.pid, signal.SIGTERM)
    await asyncio.to_thread(wait_until, lambda: status_of(f"{router.url}/readyz") == 503, "/readyz 503")
    # still serving during the drain period, so clients that have not seen the change yet are fine
    answer = await client.chat.completions.create(model=model, messages=CHAT, max_tokens=3)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    await stream
    assert finished == ["length"], "the in-flight stream was cut instead of finishing"
    await asyncio.to_thread(wait_until, lambda: not router.process.alive(), "the router to exit", 20)
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(urllib.request.urlopen, f"{router.url}/healthz", timeout=2)


async def test_a_stream_still_going_at_the_drain_deadline_is_cut_with_an_error_event(bus: World) -> None:
    router = bus.router(name="router-cut", env={"FERRY_ROUTER_DRAIN_PERIOD": "0s", "DRAIN_TIMEOUT": "1s"})
    engine = bus.engine("cut", "m", free_port(), "--inter-token-latency", "500ms")
    model = await serve(bus, router, [engine])
    client = router.client()
    received: list[str] = []

    async def endless() -> None:
        async for chunk in await client.chat.completions.create(
            model=model, messages=CHAT, stream=True, max_tokens=200
        ):  # type: ignore[arg-type]
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")

    stream = asyncio.create_task(endless())
    await asyncio.to_thread(wait_until, lambda: len(received) >= 2, "the stream to start")
    os.kill(router.process.pid, signal.SIGTERM)
    with pytest.raises((openai.APIError, openai.APIConnectionError)):
        await asyncio.wait_for(stream, 20)
    assert len(received) < 50, "the stream ran to its end instead of being cut at the deadline"
    await asyncio.to_thread(wait_until, lambda: not router.process.alive(), "the router to exit", 10)


def post_completion(url: str, model: str) -> int:
    """One request on a fresh connection (so the kernel spreads them over the workers)."""
    body = json.dumps({"model": model, "prompt": "hi", "max_tokens": 2}).encode()
    request = urllib.request.Request(f"{url}/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def requests_counted(metrics_port: int, status: str = "") -> float:
    """The requests a worker counted (with ``status``: only those it answered with that code)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    labels = rf'[^}}]*status_code="{status}"[^}}]*' if status else "[^}]*"
    return sum(
        float(v) for v in re.findall(rf"^kthena_router_requests_total\{{{labels}\}} ([0-9.e+]+)$", text, re.M)
    )


async def test_worker_processes_share_the_port_and_each_serves(bus: World) -> None:
    router = bus.router(name="router-workers", env={"FERRY_ROUTER_WORKERS": "2"})
    engine = bus.engine("workers", "m", free_port())
    model = await serve(bus, router, [engine])  # seen by one worker: each follows the bus on its own

    def each_worker_answered() -> bool:
        post_completion(router.url, model)  # a worker still loading answers 503 (an OSError): again
        return min(requests_counted(router.metrics_port + i, "200") for i in range(2)) > 0

    await asyncio.to_thread(wait_until, each_worker_answered, "a 200 from each worker", 60)
    before = [requests_counted(router.metrics_port + i) for i in range(2)]
    for _ in range(40):
        assert await asyncio.to_thread(post_completion, router.url, model) == 200
    per_worker = [requests_counted(router.metrics_port + i) - before[i] for i in range(2)]
    assert sum(per_worker) == 40
    assert min(per_worker) > 0, f"one worker served everything: {per_worker}"
    os.kill(router.process.pid, signal.SIGTERM)
    await asyncio.to_thread(wait_until, lambda: not router.process.alive(), "the supervisor to exit", 20)
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(post_completion, router.url, model)
