"""The fairness queue (spec §10) across two router replicas on one bus, with JWT users and the
official ``openai`` client: a user's usage on one replica lowers their priority on the other."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from ferry_local.readiness import free_port

from tests.integration import test_router_gateway as gateway
from tests.integration.test_router_auth import client, keys
from tests.integration.test_router_gateway import (
    RouterProcess,
    World,
    http_json,
    model_route,
    model_server,
    ns,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

world = gateway.world
bus = gateway.bus


def metric(router: RouterProcess, name: str, labels: str) -> float:
    found = re.search(rf"^{re.escape(name)}{{{labels}}} ([0-9.e+-]+)$", router.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_heavy_user_on_one_replica_waits_behind_a_light_user_on_the_other(
    bus: World, tmp_path: Path
) -> None:
    key = keys.SigningKey.rsa("fair")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.KeySet([key]).jwks()))
    config = tmp_path / "router.yaml"
    config.write_text(
        json.dumps({"auth": {"issuer": keys.ISSUER, "audiences": [keys.AUDIENCE], "jwksFile": str(jwks)}})
    )
    env = {
        "FERRY_ROUTER_CONFIG": str(config),
        "ENABLE_FAIRNESS_SCHEDULING": "true",
        "FAIRNESS_MAX_CONCURRENT": "1",
    }
    a, b = bus.router(name="router-fair-a", env=env), bus.router(name="router-fair-b", env=env)
    engine = bus.engine("fair", "m", free_port(), "--inter-token-latency", "40ms")
    engine.wait_up()
    namespace = ns()
    model = f"fair-{namespace}"
    await bus.publish(
        "modelservers", model_server(namespace, "srv", {"app": namespace}, engine.port, model="m")
    )
    rules = [{"targetModels": [{"modelServerName": "srv"}]}]
    await bus.publish("modelroutes", model_route(namespace, "route", {"modelName": model, "rules": rules}))
    await bus.pod(namespace, "pod-0", {"app": namespace}, engine.host)
    route_dump = f"/debug/config_dump/namespaces/{namespace}/modelroutes/route"
    for router in (a, b):  # /v1/models needs a token here, so the debug dump says when it is routable
        router.wait_endpoints(namespace, "srv", 1)
        wait_until(lambda r=router: http_json(f"http://127.0.0.1:{r.debug_port}{route_dump}"), "the route")
    alice, bob, carol = (client(r, key.token(u)) for r, u in ((a, "alice"), (b, "bob"), (b, "carol")))

    # alice uses the model through replica A; replica B learns it over NATS
    for _ in range(3):
        await alice.completions.create(model=model, prompt="alice warms up", max_tokens=5)
    await asyncio.to_thread(
        wait_until, lambda: metric(b, "ferry_router_fairness_usage_records_total", 'source="peer"') >= 3,
        "replica B to receive alice's usage", 30,
        lambda: "\n".join(line for r in (a, b) for line in r.metrics().splitlines() if "fairness" in line),
    )  # fmt: skip

    # on B, carol holds the only permit; alice queues first, bob after her
    alice_b = client(b, key.token("alice"))
    started = asyncio.Event()

    async def carol_stream() -> None:
        async for _ in await carol.completions.create(
            model=model, prompt="carol", max_tokens=40, stream=True
        ):
            started.set()

    holder = asyncio.create_task(carol_stream())
    await asyncio.wait_for(started.wait(), 30)
    size = lambda: metric(b, "kthena_router_fairness_queue_size", f'model="{model}",user_id="_all"')  # noqa: E731
    queued_as = {"x-request-id": "alice-queued"}
    late_alice = asyncio.create_task(alice_b.completions.create(
        model=model, prompt="alice again", max_tokens=2, extra_headers=queued_as))  # fmt: skip
    await asyncio.to_thread(wait_until, lambda: size() == 1, "alice queued on B")
    light_bob = asyncio.create_task(bob.completions.create(
        model=model, prompt="bob", max_tokens=2, extra_headers={"x-request-id": "bob-queued"}))  # fmt: skip
    await asyncio.to_thread(wait_until, lambda: size() == 2, "bob queued on B")
    await asyncio.gather(holder, late_alice, light_bob)

    served = [r["headers"].get("x-request-id") or r["headers"].get("X-Request-Id") for r in engine.requests()]
    queued = [rid for rid in served if rid in ("alice-queued", "bob-queued")]
    assert queued == ["bob-queued", "alice-queued"], f"engine saw {served}"
    assert metric(b, "kthena_router_fairness_queue_dequeue_total", f'model="{model}",user_id="_all"') >= 3
