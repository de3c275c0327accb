"""least-latency end to end: the router measures the streams it relays and routes by them.

Real processes: ``ferry-mock-engine`` engines with fixed first-token and inter-token latencies
(Kthena's e2e case: fast 20 ms / 5 ms against slow 500 ms / 20 ms), the router configured with
least-latency alone, the official ``openai`` client streaming. Which engine answered comes from the
answers (``via <engine>``), what the router measured from its debug dump.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ferry_local.readiness import free_port

from tests.support.router_world import Engine, RouterProcess, World, http_json, model_route, model_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVED = "org/latency-model"
ROUTER_CONFIG = """
scheduler:
  plugins:
    Score:
      enabled:
      - {name: least-latency, weight: 1}
"""


@dataclass
class Pool:
    router: RouterProcess
    namespace: str
    model: str
    engines: dict[str, Engine]  # by pod name

    async def ask(self, text: str) -> str:
        """Stream one answer; the pod that gave it."""
        stream = await self.router.client().chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": text}], max_tokens=6, stream=True
        )
        answer = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        return next(pod for pod, engine in self.engines.items() if f" via {engine.name} " in answer + " ")

    def observed(self) -> dict[str, Any]:
        """The router's own measures per pod (its debug dump of each pod)."""
        base = f"http://127.0.0.1:{self.router.debug_port}/debug/config_dump/namespaces/{self.namespace}/pods"
        return {pod: http_json(f"{base}/{pod}")["observed"] for pod in self.engines}


async def serve(bus: World, tmp_path: Path, latencies: dict[str, tuple[str, str]]) -> Pool:
    """Engines named by ``latencies`` (first token, between tokens) behind one model of a router."""
    namespace, port = f"ll-{uuid.uuid4().hex[:8]}", free_port()
    engines = {
        name: bus.engine(
            f"{name}-{namespace}", SERVED, port, "--time-to-first-token", ttft, "--inter-token-latency", itl
        )
        for name, (ttft, itl) in latencies.items()
    }
    for engine in engines.values():
        engine.wait_up()
    config = tmp_path / "router.yaml"
    config.write_text(ROUTER_CONFIG)
    router = bus.router(name=f"router-{namespace}", env={"FERRY_ROUTER_CONFIG": str(config)})
    await bus.publish("modelservers", model_server(namespace, "srv", {"app": namespace}, port, model=SERVED))
    model = f"latency-{namespace}"
    await bus.publish(
        "modelroutes",
        model_route(
            namespace,
            "route",
            {"modelName": model, "rules": [{"targetModels": [{"modelServerName": "srv"}]}]},
        ),
    )
    for name, engine in engines.items():
        await bus.pod(namespace, name, {"app": namespace}, engine.host)
    router.wait_endpoints(namespace, "srv", len(engines))
    router.wait_model(model)
    return Pool(router, namespace, model, engines)


async def test_requests_go_to_the_engine_with_the_lower_latency(bus: World, tmp_path: Path) -> None:
    pool = await serve(bus, tmp_path, {"fast": ("20ms", "5ms"), "slow": ("500ms", "20ms")})
    served = Counter([await pool.ask(f"question {i}") for i in range(20)])
    # each engine is tried once before the measured one is preferred, then the fast one takes the rest
    assert served["fast"] >= 19, f"least-latency sent {served['slow']} of 20 requests to the slow engine"
    seen = pool.observed()
    assert seen["fast"]["ttftPerQueuedSeconds"] > 0
    assert seen["fast"]["tpotPerInflightSeconds"] > 0
    assert seen["fast"]["awaitingFirstToken"] == 0
    if served["slow"]:  # tried once as an unmeasured engine, measured slower
        assert seen["slow"]["ttftPerQueuedSeconds"] > 5 * seen["fast"]["ttftPerQueuedSeconds"]


async def test_a_burst_is_spread_by_the_queue_it_meets(bus: World, tmp_path: Path) -> None:
    """Two equal engines, measured, then 30 requests at once: each request sent raises the projected
    first-token time of its engine by one queued request, so the burst does not pile onto the engine
    that looked faster (as it would on the measures alone: they change only as first tokens come)."""
    pool = await serve(bus, tmp_path, {"a": ("150ms", "5ms"), "b": ("150ms", "5ms")})
    for i in range(12):  # until both are measured
        await pool.ask(f"warm {i}")
        if all(pod["ttftPerQueuedSeconds"] > 0 for pod in pool.observed().values()):
            break
    assert all(pod["ttftPerQueuedSeconds"] > 0 for pod in pool.observed().values())
    burst = Counter(await asyncio.gather(*(pool.ask(f"burst {i}") for i in range(30))))
    assert min(burst["a"], burst["b"]) >= 8, f"a burst of 30 split {dict(burst)}"
