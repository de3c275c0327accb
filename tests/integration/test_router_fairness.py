"""The fairness queue (spec §10) and session boost (§11) across two router replicas on one bus,
driven by the official ``openai`` client: what one replica learns (a user's usage, a completed
session) orders the queue on the other. Replica B has one admission slot; a stream holds it while
two requests queue in a known order, and the engine's request log shows which went first."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import openai
import pytest
from ferry_local.readiness import free_port

from tests.integration.test_router_auth import client, keys
from tests.support.router_world import (
    Engine,
    RouterProcess,
    World,
    http_json,
    model_route,
    model_server,
    ns,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def metric(router: RouterProcess, name: str, labels: str) -> float:
    found = re.search(rf"^{re.escape(name)}{{{labels}}} ([0-9.e+-]+)$", router.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


async def two_replicas(
    bus: World, name: str, env: dict[str, str]
) -> tuple[RouterProcess, RouterProcess, Engine, str]:
    a, b = bus.router(name=f"{name}-a", env=env), bus.router(name=f"{name}-b", env=env)
    engine = bus.engine(name, "m", free_port(), "--inter-token-latency", "40ms")
    engine.wait_up()
    namespace = ns()
    model = f"{name}-{namespace}"
    server = model_server(namespace, "srv", {"app": namespace}, engine.port, model="m")
    await bus.publish("modelservers", server)
    rules = [{"targetModels": [{"modelServerName": "srv"}]}]
    await bus.publish("modelroutes", model_route(namespace, "route", {"modelName": model, "rules": rules}))
    await bus.pod(namespace, "pod-0", {"app": namespace}, engine.host)
    route_dump = f"/debug/config_dump/namespaces/{namespace}/modelroutes/route"
    for router in (a, b):  # /v1/models may need a token, so the debug dump says when it is routable
        router.wait_endpoints(namespace, "srv", 1)
        wait_until(lambda r=router: http_json(f"http://127.0.0.1:{r.debug_port}{route_dump}"), "the route")
    return a, b, engine, model


Queued = list[tuple[openai.AsyncOpenAI, dict[str, Any]]]


async def served_order(
    engine: Engine, model: str, holder: openai.AsyncOpenAI, queued: Queued, size: Any
) -> list[str]:
    """Hold B's slot with a stream, queue ``queued`` in order, and return the order the engine saw them."""
    started = asyncio.Event()

    async def hold() -> None:
        async for _ in await holder.completions.create(
            model=model, prompt="hold", max_tokens=40, stream=True
        ):
            started.set()

    tasks = [asyncio.create_task(hold())]
    await asyncio.wait_for(started.wait(), 30)
    for waiting, (who, headers) in enumerate(queued, start=1):
        call = who.completions.create(model=model, prompt="queued", max_tokens=2, extra_headers=headers)
        tasks.append(asyncio.create_task(call))
        await asyncio.to_thread(wait_until, lambda n=waiting: size() == n, f"{waiting} queued")
    await asyncio.gather(*tasks)
    ids = [r["headers"].get("X-Request-Id") or r["headers"].get("x-request-id") for r in engine.requests()]
    wanted = {headers["x-request-id"] for _, headers in queued}
    return [rid for rid in ids if rid in wanted]


async def test_a_heavy_user_on_one_replica_waits_behind_a_light_user_on_the_other(
    bus: World, tmp_path: Path
) -> None:
    key = keys.SigningKey.rsa("fair")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.KeySet([key]).jwks()))
    config = tmp_path / "router.yaml"
    auth = {"issuer": keys.ISSUER, "audiences": [keys.AUDIENCE], "jwksFile": str(jwks)}
    config.write_text(json.dumps({"auth": auth}))
    env = {
        "FERRY_ROUTER_CONFIG": str(config),
        "ENABLE_FAIRNESS_SCHEDULING": "true",
        "FAIRNESS_MAX_CONCURRENT": "1",
    }
    a, b, engine, model = await two_replicas(bus, "fair", env)

    # alice uses the model through replica A; replica B learns it over NATS
    for _ in range(3):
        await client(a, key.token("alice")).completions.create(model=model, prompt="warm up", max_tokens=5)
    await asyncio.to_thread(
        wait_until, lambda: metric(b, "ferry_router_fairness_usage_records_total", 'source="peer"') >= 3,
        "replica B to receive alice's usage",
    )  # fmt: skip

    # on B alice queues first and bob after her; bob, the lighter user, is served first
    size = lambda: metric(b, "kthena_router_fairness_queue_size", f'model="{model}",user_id="_all"')  # noqa: E731
    order = await served_order(engine, model, client(b, key.token("carol")), [
        (client(b, key.token("alice")), {"x-request-id": "alice-queued"}),
        (client(b, key.token("bob")), {"x-request-id": "bob-queued"}),
    ], size)  # fmt: skip
    assert order == ["bob-queued", "alice-queued"]
    assert metric(b, "kthena_router_fairness_queue_dequeue_total", f'model="{model}",user_id="_all"') >= 3


async def test_a_session_that_completed_on_one_replica_is_boosted_on_the_other(bus: World) -> None:
    env = {"ENABLE_SESSION_BOOST": "true", "SESSION_BOOST_INFLIGHT_PER_POD": "1"}
    a, b, engine, model = await two_replicas(bus, "boost", env)
    anyone = lambda router: client(router, "no-auth")  # noqa: E731
    await anyone(a).completions.create(
        model=model, prompt="turn 1", max_tokens=2, extra_headers={"X-Session-ID": "chat-1"}
    )
    await asyncio.to_thread(
        wait_until, lambda: metric(b, "ferry_router_session_boost_completions_total", 'source="peer"') >= 1,
        "replica B to learn that chat-1 completed",
    )  # fmt: skip
    size = lambda: metric(b, "kthena_router_session_boost_queue_size", f'model="{model}"')  # noqa: E731
    order = await served_order(engine, model, anyone(b), [
        (anyone(b), {"x-request-id": "fresh-queued", "X-Session-ID": "chat-2"}),
        (anyone(b), {"x-request-id": "boosted-queued", "X-Session-ID": "chat-1"}),
    ], size)  # fmt: skip
    assert order == ["boosted-queued", "fresh-queued"]
    assert metric(b, "kthena_router_session_boost_queue_dequeue_total", f'model="{model}"') >= 3
