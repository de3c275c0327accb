"""The router against a real nats-server and real mock engines, driven by the official ``openai`` client.

Objects (ModelRoutes, ModelServers, Pods) are published on ``FERRY_OBJECTS`` exactly as the
watcher publishes them; the router runs as its own process (``ferry_router.__main__``) and the
engines are ``ferry-mock-engine`` processes on 127.0.x.y addresses. Each test uses its own
namespace and model names, so tests do not see each other's routes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from typing import Any

import nats
import openai
import pytest
from ferry_local.processes import spawn, tail
from ferry_local.readiness import free_port
from ferry_schemas.runtime.jetstream import declare_streams

from tests.support.router_world import (
    CHAT,
    RouterProcess,
    World,
    http_json,
    http_ok,
    model_route,
    model_server,
    ns,
    pod_object,
    status_of,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_chat_and_completions_streaming_and_not(bus: World, router: RouterProcess) -> None:
    namespace, port = ns(), free_port()
    engines = [bus.engine(f"basic-{i}", "org/served-model", port) for i in range(2)]
    for engine in engines:
        engine.wait_up()
    await bus.publish(
        "modelservers", model_server(namespace, "srv", {"app": "basic"}, port, model="org/served-model")
    )
    await bus.publish(
        "modelroutes",
        model_route(
            namespace,
            "route",
            {"modelName": f"basic-{namespace}", "rules": [{"targetModels": [{"modelServerName": "srv"}]}]},
        ),
    )
    for i, engine in enumerate(engines):
        await bus.pod(namespace, f"pod-{i}", {"app": "basic"}, engine.host)
    router.wait_endpoints(namespace, "srv", 2)
    router.wait_model(f"basic-{namespace}")
    client = router.client()
    model = f"basic-{namespace}"

    chat = await client.chat.completions.create(model=model, messages=CHAT, max_tokens=8)  # type: ignore[arg-type]
    assert chat.choices[0].message.content
    assert chat.usage is not None
    assert chat.usage.completion_tokens > 0

    pieces = []
    usage_chunks = 0
    async for chunk in await client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=8, stream=True
    ):  # type: ignore[arg-type]
        usage_chunks += chunk.usage is not None
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert pieces
    assert usage_chunks == 0  # the usage chunk the router asked for is not shown

    completion = await client.completions.create(model=model, prompt="Once upon a time", max_tokens=5)
    assert completion.choices[0].text
    texts = [
        c.choices[0].text
        async for c in await client.completions.create(
            model=model,
            prompt="Once upon a time",
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        if c.choices
    ]
    assert "".join(texts)

    seen = [r for engine in engines for r in engine.requests()]
    assert len(seen) == 4
    assert {r["model"] for r in seen} == {"org/served-model"}  # rewritten to the ModelServer's model
    assert all(r["headers"].get("X-Request-Id") or r["headers"].get("x-request-id") for r in seen)

    # one trace: the router's server span and the engine request share the trace id
    parents = {r["traceparent"].split("-")[1] for r in seen if r.get("traceparent")}
    assert len(parents) == 4
    wait_until(lambda: router.trace_file.exists() and router.trace_file.stat().st_size > 0, "spans")
    spans = [json.loads(line) for line in router.trace_file.read_text().splitlines()]
    server_spans = {s["traceId"] for s in spans if s["kind"] == "SERVER"}
    assert parents <= server_spans
    assert "schedule" in {s["name"] for s in spans}

    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model=f"nope-{namespace}", messages=CHAT)  # type: ignore[arg-type]
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]

    models = [m.id async for m in client.models.list()]
    assert model in models

    entries = [json.loads(line) for line in router.access_log.read_text().splitlines()]
    mine = [e for e in entries if e.get("model_name") == model]
    assert len(mine) == 4
    assert all(e["model_route"] == f"{namespace}/route" and e["status_code"] == 200 for e in mine)
    assert "kthena_router_requests_total{" in router.metrics()

    def scraped() -> list[dict[str, Any]]:
        dump = http_json(f"http://127.0.0.1:{router.debug_port}/debug/config_dump/pods")["pods"]
        mine = [p for p in dump if p["namespace"] == namespace]
        return mine if len(mine) == 2 and all(p["metrics"]["scraped"] for p in mine) else []

    for item in wait_until(scraped, "engine metrics scraped"):  # /metrics and /v1/models of each engine
        assert "org/served-model" in item["models"]
        assert item["engine"] == "vllm"
    await client.close()


async def test_lora_adapter_requests_reach_the_engine_that_has_it(bus: World, router: RouterProcess) -> None:
    namespace, port = ns(), free_port()
    adapter = f"sql-{namespace}"
    with_lora = bus.engine(
        "lora-yes", "base-model", port, "--enable-lora", "--lora-modules", f"{adapter}=/adapters/sql"
    )
    without = bus.engine("lora-no", "base-model", port)
    for engine in (with_lora, without):
        engine.wait_up()
    await bus.publish(
        "modelservers", model_server(namespace, "srv", {"app": "lora"}, port, model="base-model")
    )
    await bus.publish(
        "modelroutes",
        model_route(
            namespace,
            "lora",
            {
                "modelName": f"base-{namespace}",
                "loraAdapters": [adapter],
                "rules": [{"targetModels": [{"modelServerName": "srv"}]}],
            },
        ),
    )
    await bus.pod(namespace, "with", {"app": "lora"}, with_lora.host)
    await bus.pod(namespace, "without", {"app": "lora"}, without.host)
    router.wait_endpoints(namespace, "srv", 2)
    router.wait_model(adapter)
    client = router.client()
    for _ in range(6):
        answer = await client.completions.create(model=adapter, prompt="select", max_tokens=4)
        assert answer.choices[0].text
    lora_requests = [r for r in with_lora.requests() if r.get("lora") == adapter]
    assert len(lora_requests) == 6
    assert all(r["model"] == adapter for r in lora_requests)  # LoRA names are not rewritten
    base = await client.completions.create(model=f"base-{namespace}", prompt="x", max_tokens=2)
    assert base.model == "base-model"
    await client.close()


async def test_weighted_split_over_1000_requests(bus: World, router: RouterProcess) -> None:
    namespace, port = ns(), free_port()
    heavy, light = bus.engine("heavy", "split-model", port), bus.engine("light", "split-model", port)
    for engine in (heavy, light):
        engine.wait_up()
    for name, engine in (("heavy", heavy), ("light", light)):
        await bus.publish(
            "modelservers", model_server(namespace, name, {"app": name}, port, model="split-model")
        )
        await bus.pod(namespace, f"{name}-0", {"app": name}, engine.host)
    targets = [{"modelServerName": "heavy", "weight": 70}, {"modelServerName": "light", "weight": 30}]
    await bus.publish(
        "modelroutes",
        model_route(
            namespace, "split", {"modelName": f"split-{namespace}", "rules": [{"targetModels": targets}]}
        ),
    )
    router.wait_endpoints(namespace, "heavy", 1)
    router.wait_endpoints(namespace, "light", 1)
    router.wait_model(f"split-{namespace}")
    client = router.client()
    gate = asyncio.Semaphore(32)

    async def one() -> None:
        async with gate:
            await client.completions.create(model=f"split-{namespace}", prompt="p", max_tokens=1)

    await asyncio.gather(*(one() for _ in range(1000)))
    counts = Counter({"heavy": len(heavy.requests()), "light": len(light.requests())})
    assert counts.total() == 1000
    # binomial(1000, 0.7): sd = 14.5 requests; 4.5 sd is 0.065
    assert abs(counts["heavy"] / 1000 - 0.7) < 0.065, counts
    await client.close()


async def test_prefill_decode_route_sends_the_right_requests(bus: World, router: RouterProcess) -> None:
    namespace, port = ns(), free_port()
    prefill = bus.engine(
        "prefill",
        "pd-model",
        port,
        "--kv-transfer-config",
        '{"kv_connector":"NixlConnector","kv_role":"kv_producer"}',
    )
    decode = bus.engine(
        "decode",
        "pd-model",
        port,
        "--kv-transfer-config",
        '{"kv_connector":"NixlConnector","kv_role":"kv_consumer"}',
    )
    for engine in (prefill, decode):
        engine.wait_up()
    pd_group = {
        "groupKey": "modelserving.volcano.sh/group-name",
        "prefillLabels": {"modelserving.volcano.sh/rolename": "prefill"},
        "decodeLabels": {"modelserving.volcano.sh/rolename": "decode"},
    }
    await bus.publish(
        "modelservers",
        model_server(
            namespace,
            "pd",
            {"app": "pd"},
            port,
            pdGroup=pd_group,
            kvConnector={"type": "nixl"},
            model="pd-model",
        ),
    )
    await bus.publish(
        "modelroutes",
        model_route(
            namespace,
            "pd",
            {"modelName": f"pd-{namespace}", "rules": [{"targetModels": [{"modelServerName": "pd"}]}]},
        ),
    )
    for name, engine, role in (("p0", prefill, "prefill"), ("d0", decode, "decode")):
        labels = {
            "app": "pd",
            "modelserving.volcano.sh/group-name": "g0",
            "modelserving.volcano.sh/rolename": role,
        }
        await bus.pod(namespace, name, labels, engine.host)
    router.wait_endpoints(namespace, "pd", 1, key="decodePods")
    router.wait_endpoints(namespace, "pd", 1, key="prefillPods")
    router.wait_model(f"pd-{namespace}")
    client = router.client()
    chat = await client.chat.completions.create(model=f"pd-{namespace}", messages=CHAT, max_tokens=6)  # type: ignore[arg-type]
    assert chat.choices[0].message.content
    pieces = [
        c.choices[0].delta.content or ""
        async for c in await client.chat.completions.create(
            model=f"pd-{namespace}", messages=CHAT, max_tokens=6, stream=True
        )  # type: ignore[arg-type]
        if c.choices
    ]
    assert "".join(pieces)
    p_seen, d_seen = prefill.requests(), decode.requests()
    assert [r["role"] for r in p_seen] == ["prefill", "prefill"]
    assert [r["role"] for r in d_seen] == ["decode", "decode"]
    assert all(r["status"] == 200 and r["error"] is None for r in p_seen + d_seen)
    for r in p_seen:
        assert r["body"]["max_tokens"] == 1
        assert "stream" not in r["body"]
        assert r["kv_transfer_params"] == {"do_remote_decode": True, "do_remote_prefill": False}
    for r in d_seen:
        assert r["kv_transfer_params"]["do_remote_prefill"] is True  # what the prefill answered
        assert r["body"]["max_tokens"] == 6
    assert d_seen[1]["body"]["stream"] is True
    assert "kthena_router_request_prefill_duration_seconds_count" in router.metrics()
    decode_parents = {r["traceparent"].split("-")[2] for r in d_seen}

    def phase_spans() -> dict[str, str]:
        spans = [json.loads(line) for line in router.trace_file.read_text().splitlines()]
        found = {s["spanId"]: s["name"] for s in spans if s["name"] in ("prefill", "decode")}
        return found if decode_parents <= set(found) else {}

    # the decode engine's parent span is the router's "decode" span (written when the span ends)
    spans = wait_until(phase_spans, "prefill/decode spans", timeout=10)
    assert {spans[p] for p in decode_parents} == {"decode"}
    assert "prefill" in spans.values()
    await client.close()


async def test_rate_limit_is_429_and_global_limits_are_shared_by_replicas(
    bus: World, router: RouterProcess
) -> None:
    namespace, port = ns(), free_port()
    engine = bus.engine("limited", "limited-model", port)
    engine.wait_up()
    await bus.publish(
        "modelservers", model_server(namespace, "srv", {"app": "limited"}, port, model="limited-model")
    )
    await bus.pod(namespace, "p", {"app": "limited"}, engine.host)
    rule = [{"targetModels": [{"modelServerName": "srv"}]}]
    # "hello world" as one chat message is 10 estimated tokens
    hello = [{"role": "user", "content": "hello world"}]
    local = {"inputTokensPerUnit": 30, "unit": "hour"}
    shared = {"inputTokensPerUnit": 40, "unit": "hour", "global": {"redis": {"address": "ignored:6379"}}}
    await bus.publish(
        "modelroutes",
        model_route(
            namespace, "local", {"modelName": f"local-{namespace}", "rules": rule, "rateLimit": local}
        ),
    )
    await bus.publish(
        "modelroutes",
        model_route(
            namespace, "global", {"modelName": f"global-{namespace}", "rules": rule, "rateLimit": shared}
        ),
    )
    router.wait_endpoints(namespace, "srv", 1)
    router.wait_model(f"local-{namespace}")
    router.wait_model(f"global-{namespace}")
    client = router.client()
    statuses = []
    refusals: list[Any] = []
    for _ in range(4):
        try:
            await client.chat.completions.create(model=f"local-{namespace}", messages=hello, max_tokens=2)  # type: ignore[arg-type]
            statuses.append(200)
        except openai.RateLimitError as exc:
            statuses.append(429)
            refusals.append(exc.body)
    assert statuses == [200, 200, 200, 429]
    assert refusals[0]["type"] == "rate_limit_error"
    assert "rate limit" in refusals[0]["message"]
    assert 'limit_type="input_tokens"' in router.metrics()

    replica = bus.router(name="router-replica")  # starts late: reads the routes from the stream
    # ready means the first snapshot is in: no waiting for routes or endpoints after /readyz
    assert f"global-{namespace}" in {m["id"] for m in http_json(f"{replica.url}/v1/models")["data"]}
    assert len(replica.server(namespace, "srv")["associatedPods"]) == 1  # type: ignore[index]
    clients = [client, replica.client()]
    outcomes = []
    for i in range(6):  # alternate replicas: together they may spend 40 tokens, 4 requests
        try:
            await clients[i % 2].chat.completions.create(
                model=f"global-{namespace}", messages=hello, max_tokens=2
            )  # type: ignore[arg-type]
            outcomes.append(200)
        except openai.RateLimitError:
            outcomes.append(429)
    assert outcomes == [200, 200, 200, 200, 429, 429]
    for c in clients:
        await c.close()


async def test_endpoint_removed_mid_run_gets_no_more_traffic(bus: World, router: RouterProcess) -> None:
    namespace, port = ns(), free_port()
    keep, drop = (
        bus.engine("keep", "churn-model", port),
        bus.engine("drop", "churn-model", port, "--inter-token-latency", "5ms"),
    )
    for engine in (keep, drop):
        engine.wait_up()
    await bus.publish(
        "modelservers", model_server(namespace, "srv", {"app": "churn"}, port, model="churn-model")
    )
    await bus.publish(
        "modelroutes",
        model_route(
            namespace,
            "churn",
            {"modelName": f"churn-{namespace}", "rules": [{"targetModels": [{"modelServerName": "srv"}]}]},
        ),
    )
    await bus.pod(namespace, "keep", {"app": "churn"}, keep.host)
    await bus.pod(namespace, "drop", {"app": "churn"}, drop.host)
    router.wait_endpoints(namespace, "srv", 2)
    router.wait_model(f"churn-{namespace}")
    client = router.client()
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            try:
                await client.completions.create(model=f"churn-{namespace}", prompt="go", max_tokens=4)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    await asyncio.sleep(1.0)
    assert drop.requests(), "both endpoints should serve before the removal"
    tombstone = pod_object(namespace, "drop", {"app": "churn"}, drop.host)
    await bus.publish("pods", tombstone, event="DELETED")
    await asyncio.to_thread(router.wait_endpoints, namespace, "srv", 1)
    removed_at = len(drop.requests())
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*workers)
    assert errors == []
    assert len(drop.requests()) == removed_at  # nothing new after the tombstone was applied
    assert len(keep.requests()) > 20
    await client.close()


async def test_not_ready_until_the_stream_exists_and_its_snapshot_is_read(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from ferry_local.binaries import find_binaries
    from ferry_local.natsd import NatsServer

    directory = tmp_path_factory.mktemp("router-fresh-nats")
    server = NatsServer(find_binaries().nats_server, directory / "store", directory / "logs")
    server.start()
    world = World(server.url, directory / "logs")
    try:
        port, metrics_port = free_port(), free_port()
        env = {
            "FERRY_NATS_URL": server.url,
            "FERRY_ROUTER_PORT": str(port),
            "FERRY_ROUTER_METRICS_PORT": str(metrics_port),
            "FERRY_ROUTER_DEBUG_PORT": "-1",
            "FERRY_ROUTER_CONFIG": "",
        }
        argv = [sys.executable, "-c", "from ferry_router.__main__ import main; main()"]
        process = spawn("router-fresh", argv, world.log_dir, env)
        world.processes.append(process)
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
            "router alive",
            logs=lambda: tail(process.log),
        )
        await asyncio.sleep(1.5)  # several subscribe attempts against a server without the stream
        assert await asyncio.to_thread(status_of, f"http://127.0.0.1:{port}/readyz") == 503
        world.nc = await nats.connect(server.url)
        world.js = world.nc.jetstream()
        await declare_streams(world.js)
        spec = {"modelName": "fresh-model", "rules": [{"targetModels": [{"modelServerName": "s"}]}]}
        await world.publish("modelroutes", model_route("fresh", "r", spec))
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), "ready", logs=lambda: tail(process.log)
        )
        listed = http_json(f"http://127.0.0.1:{port}/v1/models")["data"]
        assert [m["id"] for m in listed] == ["fresh-model"]
        await world.nc.drain()
    finally:
        for p in world.processes:
            p.stop(timeout=5)
        server.stop()


@pytest.mark.parametrize("connector", ["http", "lmcache", "mooncake", "sglang"])
async def test_prefill_decode_connectors(bus: World, router: RouterProcess, connector: str) -> None:
    namespace, port = ns(), free_port()
    flags = ["--mock-connector", connector] + (["--engine", "sglang"] if connector == "sglang" else [])
    prefill = bus.engine(f"{connector}-p", "pd-model", port, "--mock-role", "prefill", *flags)
    decode = bus.engine(f"{connector}-d", "pd-model", port, "--mock-role", "decode", *flags)
    for engine in (prefill, decode):
        engine.wait_up()
    pd_group = {"groupKey": "group", "prefillLabels": {"role": "p"}, "decodeLabels": {"role": "d"}}
    spec: dict[str, Any] = {"pdGroup": pd_group, "model": "pd-model"}
    if connector == "sglang":
        spec["inferenceEngine"] = "SGLang"  # no kvConnector: SGLang engines get the sglang connector
    else:
        spec["kvConnector"] = {"type": connector}
    await bus.publish("modelservers", model_server(namespace, "pd", {"app": "pd"}, port, **spec))
    route_spec = {"modelName": f"pd-{namespace}", "rules": [{"targetModels": [{"modelServerName": "pd"}]}]}
    await bus.publish("modelroutes", model_route(namespace, "pd", route_spec))
    await bus.pod(namespace, "p0", {"app": "pd", "group": "g", "role": "p"}, prefill.host)
    await bus.pod(namespace, "d0", {"app": "pd", "group": "g", "role": "d"}, decode.host)
    router.wait_endpoints(namespace, "pd", 1, key="decodePods")
    router.wait_endpoints(namespace, "pd", 1, key="prefillPods")
    router.wait_model(f"pd-{namespace}")
    client = router.client()
    text = "".join(
        [
            c.choices[0].text
            async for c in await client.completions.create(
                model=f"pd-{namespace}", prompt="tell me", max_tokens=5, stream=True
            )
            if c.choices
        ]
    )
    assert text
    answer = await client.completions.create(model=f"pd-{namespace}", prompt="tell me", max_tokens=5)
    assert answer.choices[0].text
    p_seen, d_seen = prefill.requests(), decode.requests()
    assert [(r["role"], r["status"], r["error"]) for r in p_seen] == [("prefill", 200, None)] * 2
    assert [(r["role"], r["status"], r["error"]) for r in d_seen] == [("decode", 200, None)] * 2
    assert all(r["body"]["max_tokens"] == 1 for r in p_seen)
    if connector == "sglang":
        assert [r["bootstrap_room"] for r in p_seen] == [r["bootstrap_room"] for r in d_seen]
        assert {r["bootstrap_host"] for r in d_seen} == {prefill.host}
    elif connector == "mooncake":  # NIXL's exchange of kv_transfer_params
        assert all(r["kv_transfer_params"]["do_remote_decode"] is True for r in p_seen)
        assert all(r["kv_transfer_params"]["do_remote_prefill"] is True for r in d_seen)
    else:
        assert all(r["kv_transfer_params"] is None for r in p_seen + d_seen)  # KV moves out of band
    await client.close()
