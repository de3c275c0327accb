"""KV-aware routing end to end: simulated engines publish vLLM KV events over ZMQ, Ferry's runtime
sidecars bridge them onto NATS, and the router's ``kvcache-aware`` plugin sends follow-ups of a
conversation to the pod that holds its prefix.

Everything is a real process: two ``ferry-mock-engine`` simulators (``--kv-events-config``), two
``ferry-runtime`` sidecars, the router, nats-server. The test learns which pod holds a prefix only
from the ``ferry.kv.>`` messages on NATS, and which pod answered only from the answers.

The engines also serve a LoRA adapter, loaded in a different order on each (so its vLLM
``lora_id`` differs: 2 on one pod, 1 on the other): a conversation with the adapter must follow the
adapter's KV, which the sidecars key by the adapter's name.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from ferry_local.processes import spawn
from ferry_local.readiness import free_port
from ferry_schemas.kv import KV_FILTER, KvBlockEvents, lora_root, token_block_hashes

from tests.support.router_world import (
    Engine,
    RouterProcess,
    World,
    model_route,
    model_server,
    next_ip,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SERVED = "org/kv-model"
ROUTER_CONFIG = """
scheduler:
  pluginConfig:
  - name: kvcache-aware
    args: {blockSizeToHash: 16, maxBlocksToMatch: 128}
  plugins:
    Score:
      enabled:
      - {name: least-request, weight: 1}
      - {name: kvcache-aware, weight: 1}
"""
AFFINITY_FILTER = """\
    Filter:
      enabled: [kvcache-aware]
"""


def lora_modules(adapter: str) -> tuple[list[str], list[str]]:
    """Each engine's ``--lora-modules``: ``adapter`` loaded second on one, first on the other."""
    return ["tone-lora=/adapters/tone", f"{adapter}=/adapters/sql"], [f"{adapter}=/adapters/sql"]


def start_engine(world: World, name: str, port: int, loras: list[str]) -> tuple[Engine, str]:
    """A simulator publishing KV events on its own address; returns it and its ZMQ endpoint."""
    host, zmq_port = next_ip(), free_port()
    events = json.dumps({"enable_kv_cache_events": True, "endpoint": f"tcp://*:{zmq_port}", "topic": "kv"})
    extra = ["--kv-events-config", events, "--time-scale", "0.1", "--lora-modules", *loras]
    engine = world.engine(name, SERVED, port, *extra, host=host)
    return engine, f"tcp://{host}:{zmq_port}"


def start_sidecar(world: World, namespace: str, pod: str, endpoint: str, engine: Engine) -> None:
    argv = [
        sys.executable, "-m", "ferry_runtime", "--port", str(free_port()), "--host", "127.0.0.1",
        "--pod", f"{pod}.{namespace}", "--model", SERVED, "--kv-events-endpoint", endpoint,
        "--kv-events-topic", "kv", "--engine-base-url", engine.url,
    ]  # fmt: skip
    world.processes.append(spawn(f"runtime-{pod}", argv, world.log_dir, {"FERRY_NATS_URL": world.nats_url}))


def system_prompt(topic: str) -> str:
    return f"You are the {topic} expert. " + " ".join(f"{topic} fact {i} is important." for i in range(150))


@pytest.mark.parametrize("affinity_filter", [False, True], ids=["scores", "affinity-filter"])
async def test_follow_ups_go_to_the_pod_holding_the_prefix(
    bus: World, tmp_path: Path, affinity_filter: bool
) -> None:
    """With Kthena's configuration, and with kvcache-aware enabled as the affinity filter too."""
    namespace, port = f"kv-{uuid.uuid4().hex[:8]}", free_port()
    adapter = f"sql-{namespace}"  # routable names are global: the session's bus holds other modules' routes
    pods = {}
    for i, loras in enumerate(lora_modules(adapter)):
        engine, endpoint = start_engine(bus, f"kv-{i}", port, loras)
        start_sidecar(bus, namespace, f"pod-{i}", endpoint, engine)
        pods[f"pod-{i}"] = engine
    for engine in pods.values():
        engine.wait_up()

    held: dict[str, set[int]] = {pod: set() for pod in pods}

    async def on_kv(msg: Any) -> None:
        event = KvBlockEvents.model_validate_json(msg.data)
        if event.namespace == namespace:
            blocks = held[event.pod]
            if event.snapshot or event.cleared:
                blocks.clear()
            blocks.update(event.stored)
            blocks.difference_update(event.removed)

    sub = await bus.nc.subscribe(KV_FILTER, cb=on_kv)
    config = tmp_path / "router.yaml"
    config.write_text(ROUTER_CONFIG + (AFFINITY_FILTER if affinity_filter else ""))
    router: RouterProcess = bus.router(name="kv-router", env={"FERRY_ROUTER_CONFIG": str(config)})
    try:
        await bus.publish("modelservers", model_server(namespace, "srv", {"app": "kv"}, port, model=SERVED))
        model = f"kv-{namespace}"
        await bus.publish(
            "modelroutes",
            model_route(
                namespace,
                "route",
                {
                    "modelName": model,
                    "loraAdapters": [adapter],
                    "rules": [{"targetModels": [{"modelServerName": "srv"}]}],
                },
            ),
        )
        for pod, engine in pods.items():
            await bus.pod(namespace, pod, {"app": "kv"}, engine.host)
        router.wait_endpoints(namespace, "srv", 2)
        router.wait_model(model)
        client = router.client()

        def served_by(answer: Any) -> str:
            text = answer.choices[0].message.content or ""
            return next(pod for pod, engine in pods.items() if f"via {engine.name} " in text + " ")

        # The adapter's conversation shares the base model's system prompt: only its own KV counts.
        for topic, asked in (("astronomy", model), ("botany", model), ("astronomy", adapter)):
            system = {"role": "system", "content": system_prompt(topic)}
            messages = [system, {"role": "user", "content": "Where do we start?"}]
            first = await client.chat.completions.create(model=asked, messages=messages, max_tokens=6)  # type: ignore[arg-type]
            tokens = http_json_post(f"{pods['pod-0'].url}/tokenize", {"model": SERVED, "messages": messages})
            root = lora_root(adapter) if asked == adapter else 0
            prefix = token_block_hashes(tokens, 16, 128, root)
            assert len(prefix) > 60

            # Who holds the prefix, as the bus tells it (the sidecars' messages, nothing else).
            def holder(prefix: list[int] = prefix) -> str | None:
                owners = [pod for pod, blocks in held.items() if set(prefix[:60]) <= blocks]
                return owners[0] if len(owners) == 1 else None

            pod = await asyncio.to_thread(wait_until, holder, f"KV events for the {topic} prefix")
            assert pod == served_by(first)
            await asyncio.to_thread(
                wait_until,
                lambda: metric(router, "ferry_router_kv_index_blocks") >= sum(map(len, held.values())),
                "the router's index to catch up",
            )
            for turn in range(4):
                follow_up = [system, {"role": "user", "content": f"And then, step {turn} of {topic}?"}]
                answer = await client.chat.completions.create(model=asked, messages=follow_up, max_tokens=6)  # type: ignore[arg-type]
                assert served_by(answer) == pod, (
                    f"follow-up {turn} of {topic} left the pod holding its prefix"
                )
        assert "kthena_router_kvcache_aware_match_ratio_bucket" in router.metrics()
    finally:
        await sub.unsubscribe()


def http_json_post(url: str, body: dict[str, Any]) -> list[int]:
    import urllib.request

    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return list(json.loads(response.read())["tokens"])


def metric(router: RouterProcess, name: str) -> float:
    for line in router.metrics().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
