"""The OpenAI surface of a real mock engine over real HTTP (aiohttp client and the openai client)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable

import aiohttp
import openai
import pytest
from ferry_mock_engine import MockEngine
from ferry_mock_engine.generation import prompt_hash
from ferry_mock_engine.identity import CHALLENGE_HEADER, ENV_TOKEN, PROOF_HEADER, verify

EngineFactory = Callable[..., Awaitable[MockEngine]]

CHAT = [{"role": "user", "content": "hello there"}]


async def test_chat_non_streaming_is_deterministic_and_counts_usage(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    engine = await start_engine("--served-model-name", "m1", "--mock-id", "e1")
    body = {"model": "m1", "messages": CHAT, "max_tokens": 8}
    answers = []
    for _ in range(2):
        async with http.post(f"{engine.url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["x-mock-engine"] == "e1"
            answers.append(await resp.json())
    first = answers[0]
    text = first["choices"][0]["message"]["content"]
    assert text == answers[1]["choices"][0]["message"]["content"]
    assert text.startswith(f"m1 answers {prompt_hash('user: hello there')} via e1")
    assert first["object"] == "chat.completion"
    assert first["choices"][0]["finish_reason"] == "length"
    assert first["usage"]["completion_tokens"] == 8
    assert first["usage"]["total_tokens"] == first["usage"]["prompt_tokens"] + 8


async def test_chat_streaming_with_the_openai_client(start_engine: EngineFactory) -> None:
    engine = await start_engine("--served-model-name", "m1", "--inter-token-latency", "1ms")
    client = openai.AsyncOpenAI(base_url=f"{engine.url}/v1", api_key="none", max_retries=0, timeout=30)
    try:
        stream = await client.chat.completions.create(
            model="m1", messages=CHAT, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
        pieces, usage, finish = [], None, None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage
        full = await client.chat.completions.create(model="m1", messages=CHAT, max_tokens=6)
    finally:
        await client.close()
    assert "".join(pieces) == full.choices[0].message.content
    assert finish == "length"
    assert usage is not None
    assert usage.completion_tokens == 6


async def test_completions_stream_ends_with_usage_then_done(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    engine = await start_engine("--model", "m2")
    body = {"model": "m2", "prompt": "abc", "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(f"{engine.url}/v1/completions", json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = (await resp.read()).decode()
    events = [line.removeprefix("data: ") for line in raw.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 16  # the default budget
    texts = [json.loads(e)["choices"][0]["text"] for e in events[:-2]]
    assert "".join(texts).startswith("m2 answers")

    body.pop("stream_options")
    async with http.post(f"{engine.url}/v1/completions", json=body) as resp:
        raw = (await resp.read()).decode()
    assert '"usage"' not in raw  # usage only when asked for


async def test_context_length_is_enforced(start_engine: EngineFactory, http: aiohttp.ClientSession) -> None:
    engine = await start_engine("--served-model-name", "m", "--max-model-len", "20")
    body = {"model": "m", "prompt": "x" * 40, "max_tokens": 10}  # 10 prompt tokens + 10 = 20: fits
    async with http.post(f"{engine.url}/v1/completions", json=body) as resp:
        assert resp.status == 200
    body["max_tokens"] = 11
    async with http.post(f"{engine.url}/v1/completions", json=body) as resp:
        assert resp.status == 400
        assert "maximum context length is 20 tokens" in (await resp.json())["error"]["message"]


@pytest.mark.parametrize(
    ("path", "payload", "status", "needle"),
    [
        ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/chat/completions", b'{"model": "m1"}', 400, "messages"),
        ("/v1/completions", b'{"model": "m1", "prompt": 3}', 400, "prompt"),
        ("/v1/completions", b'{"model": "m1", "prompt": "x", "max_tokens": -1}', 400, "max_tokens"),
        (
            "/v1/chat/completions",
            b'{"model": "other", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "other",
        ),
    ],
)
async def test_bad_requests_get_openai_errors(
    start_engine: EngineFactory,
    http: aiohttp.ClientSession,
    path: str,
    payload: bytes,
    status: int,
    needle: str,
) -> None:
    engine = await start_engine("--served-model-name", "m1")
    async with http.post(
        engine.url + path, data=payload, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert error["code"] == status
    assert needle in error["message"]
    assert engine.requests[-1].status == status


async def test_models_and_runtime_lora_adapters(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    engine = await start_engine(
        "--served-model-name", "base", "--enable-lora", "--lora-modules", "sql=/l/sql"
    )

    async def model_ids() -> list[str]:
        async with http.get(f"{engine.url}/v1/models") as resp:
            return [m["id"] for m in (await resp.json())["data"]]

    assert await model_ids() == ["base", "sql"]
    async with http.post(
        f"{engine.url}/v1/load_lora_adapter", json={"lora_name": "b", "lora_path": "/l/b"}
    ) as r:
        assert r.status == 200
    async with http.post(
        f"{engine.url}/v1/load_lora_adapter", json={"lora_name": "b", "lora_path": "/l/b"}
    ) as r:
        assert r.status == 400
    assert await model_ids() == ["base", "sql", "b"]
    async with http.post(f"{engine.url}/v1/chat/completions", json={"model": "b", "messages": CHAT}) as resp:
        assert resp.status == 200
        assert (await resp.json())["choices"][0]["message"]["content"].startswith("b answers")
    assert engine.requests[-1].lora == "b"
    async with http.post(f"{engine.url}/v1/unload_lora_adapter", json={"lora_name": "b"}) as r:
        assert r.status == 200
    async with http.post(f"{engine.url}/v1/unload_lora_adapter", json={"lora_name": "b"}) as r:
        assert r.status == 404
    async with http.post(f"{engine.url}/v1/chat/completions", json={"model": "b", "messages": CHAT}) as resp:
        assert resp.status == 404


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_metrics_follow_real_load(start_engine: EngineFactory, http: aiohttp.ClientSession) -> None:
    engine = await start_engine(
        "--served-model-name", "m", "--max-num-seqs", "1", "--time-to-first-token", "1s",
        "--block-size", "4", "--kv-cache-size", "100",
    )  # fmt: skip

    async def metrics() -> str:
        async with http.get(f"{engine.url}/metrics") as resp:
            assert resp.status == 200
            return await resp.text()

    idle = await metrics()
    assert _metric(idle, "vllm:num_requests_running") == 0
    assert _metric(idle, "vllm:kv_cache_usage_perc") == 0

    body = {"model": "m", "prompt": "x" * 40, "max_tokens": 2}
    tasks = [asyncio.create_task(http.post(f"{engine.url}/v1/completions", json=body)) for _ in range(2)]
    seen_busy = False
    for _ in range(200):  # bounded poll: the busy state lasts about a second
        text = await metrics()
        if (
            _metric(text, "vllm:num_requests_running") == 1
            and _metric(text, "vllm:num_requests_waiting") == 1
        ):
            seen_busy = True
            assert _metric(text, "vllm:kv_cache_usage_perc") == pytest.approx(0.03)  # 10 prompt tokens / 4
            assert _metric(text, "vllm:gpu_cache_usage_perc") == pytest.approx(0.03)
            break
        await asyncio.sleep(0.02)
    for response in await asyncio.gather(*tasks):
        assert response.status == 200
        response.release()
    assert seen_busy
    done = await metrics()
    assert _metric(done, "vllm:num_requests_running") == 0
    assert _metric(done, "vllm:num_requests_waiting") == 0
    assert _metric(done, "vllm:time_to_first_token_seconds_count") == 2
    assert _metric(done, "vllm:time_to_first_token_seconds_sum") >= 2.0  # each waited the 1 s TTFT
    assert _metric(done, "vllm:time_per_output_token_seconds_count") == 2  # one gap per 2-token answer
    assert _metric(done, "vllm:inter_token_latency_seconds_count") == 2
    assert _metric(done, "vllm:generation_tokens_total") == 4


async def test_sglang_engine_exposes_sglang_metric_names(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    engine = await start_engine("python3", "-m", "sglang.launch_server", "--model-path", "q")
    async with http.post(f"{engine.url}/v1/completions", json={"model": "q", "prompt": "hi"}) as resp:
        assert resp.status == 200
    async with http.get(f"{engine.url}/metrics") as resp:
        text = await resp.text()
    assert _metric(text, "sglang:num_running_reqs") == 0
    assert _metric(text, "sglang:num_queue_reqs") == 0
    assert _metric(text, "sglang:token_usage") == 0
    assert _metric(text, "sglang:time_to_first_token_seconds_count") == 1
    assert "vllm:" not in text


async def test_inspection_records_headers_and_can_be_cleared(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    engine = await start_engine("--served-model-name", "m")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {"traceparent": traceparent, "x-request-id": "r-1"}
    async with http.post(
        f"{engine.url}/v1/chat/completions", json={"model": "m", "messages": CHAT}, headers=headers
    ) as resp:
        assert resp.headers["x-request-id"] == "r-1"
    async with http.get(f"{engine.url}/mock/requests") as resp:
        records = await resp.json()
    assert len(records) == 1
    rec = records[0]
    assert (rec["path"], rec["model"], rec["role"], rec["status"]) == (
        "/v1/chat/completions",
        "m",
        "aggregated",
        200,
    )
    assert rec["traceparent"] == traceparent
    assert rec["headers"]["x-request-id"] == "r-1"
    assert rec["body"]["messages"] == CHAT
    assert rec["finished"] is True
    async with http.get(f"{engine.url}/mock/requests", params={"role": "decode"}) as resp:
        assert await resp.json() == []
    async with http.get(f"{engine.url}/mock/requests", params={"path": "/v1/chat/completions"}) as resp:
        assert len(await resp.json()) == 1
    async with http.delete(f"{engine.url}/mock/requests") as resp:
        assert resp.status == 204
    async with http.get(f"{engine.url}/mock/requests") as resp:
        assert await resp.json() == []
    async with http.get(f"{engine.url}/mock/info") as resp:
        info = await resp.json()
    assert info["served_model_names"] == ["m"]
    assert info["port"] == engine.port


async def test_fault_injection_and_runtime_delays(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    engine = await start_engine("--served-model-name", "m")
    async with http.post(
        f"{engine.url}/mock/config", json={"fail_status": 503, "fail_count": 1, "itl": 0.001}
    ) as r:
        assert r.status == 200
        assert (await r.json())["itl"] == 0.001
    body = {"model": "m", "prompt": "p"}
    async with http.post(f"{engine.url}/v1/completions", json=body) as resp:
        assert resp.status == 503
    async with http.post(f"{engine.url}/v1/completions", json=body) as resp:
        assert resp.status == 200
    async with http.post(f"{engine.url}/mock/config", json={"fail_status": 200}) as r:
        assert r.status == 400


async def test_health(start_engine: EngineFactory, http: aiohttp.ClientSession) -> None:
    engine = await start_engine()
    async with http.get(f"{engine.url}/health") as resp:
        assert resp.status == 200


async def test_health_proves_the_engine_holds_its_pods_token(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    mine = await start_engine(env={ENV_TOKEN: "pod-a"})
    other = await start_engine(env={ENV_TOKEN: "pod-b"})
    tokenless = await start_engine()
    challenge = {CHALLENGE_HEADER: "nonce-1"}
    async with http.get(f"{mine.url}/health", headers=challenge) as resp:
        assert verify("pod-a", "nonce-1", resp.headers.get(PROOF_HEADER))
    async with http.get(f"{other.url}/health", headers=challenge) as resp:
        assert not verify("pod-a", "nonce-1", resp.headers.get(PROOF_HEADER))
    async with http.get(f"{tokenless.url}/health", headers=challenge) as resp:
        assert resp.status == 200
        assert not verify("pod-a", "nonce-1", resp.headers.get(PROOF_HEADER))


async def test_tokenize_agrees_with_usage(start_engine: EngineFactory, http: aiohttp.ClientSession) -> None:
    engine = await start_engine("--served-model-name", "m")
    async with http.post(f"{engine.url}/tokenize", json={"model": "m", "prompt": "x" * 10}) as resp:
        first = await resp.json()
    async with http.post(f"{engine.url}/tokenize", json={"model": "m", "prompt": "x" * 10}) as resp:
        assert (await resp.json())["tokens"] == first["tokens"]
    async with http.post(f"{engine.url}/v1/completions", json={"model": "m", "prompt": "x" * 10}) as resp:
        assert (await resp.json())["usage"]["prompt_tokens"] == first["count"] == 3
    async with http.post(f"{engine.url}/tokenize", json={"model": "nope", "prompt": "x"}) as resp:
        assert resp.status == 404


async def test_client_disconnect_mid_stream_frees_the_slot(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    engine = await start_engine("--served-model-name", "m", "--inter-token-latency", "50ms")
    body = {"model": "m", "prompt": "p", "max_tokens": 200, "stream": True}
    async with http.post(f"{engine.url}/v1/completions", json=body) as resp:
        assert (await resp.content.readline()).startswith(b"data: ")
        assert engine.load.running  # generating
        resp.close()  # hang up mid-stream
    for _ in range(200):  # bounded: the engine notices at its next write (50 ms)
        if not engine.load.running:
            break
        await asyncio.sleep(0.02)
    assert not engine.load.running
    assert engine.requests[-1].error == "client disconnected"
    assert engine.requests[-1].output_tokens < 200


async def test_runtime_sidecar_port_serves_kthena_names_under_load(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    """Kthena's runtime sidecar (port 8100 in a booster's pods) renames engine metrics to ``kthena:*``;
    the booster's generated autoscaling binding scrapes it, so the mock serves it too."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        runtime_port = probe.getsockname()[1]
    engine = await start_engine(
        "--served-model-name", "m", "--max-num-seqs", "1", "--time-to-first-token", "1s",
        env={"FERRY_MOCK_RUNTIME_PORT": str(runtime_port)},
    )  # fmt: skip
    runtime_url = f"http://127.0.0.1:{runtime_port}/metrics"
    body = {"model": "m", "prompt": "hello", "max_tokens": 1}
    tasks = [asyncio.create_task(http.post(f"{engine.url}/v1/completions", json=body)) for _ in range(3)]
    waiting = []
    for _ in range(100):  # bounded poll while the first request holds the only slot
        async with http.get(runtime_url) as resp:
            text = await resp.text()
        waiting.append(_metric(text, "kthena:num_requests_waiting"))
        if waiting[-1] == 2:
            assert _metric(text, "vllm:num_requests_waiting") == 2  # the raw names are kept
            break
        await asyncio.sleep(0.02)
    for response in await asyncio.gather(*tasks):
        response.release()
    assert waiting[-1] == 2, waiting
    async with http.get(runtime_url) as resp:
        done = await resp.text()
    assert _metric(done, "kthena:generation_tokens_total") == 3
    assert _metric(done, "kthena:time_to_first_token_seconds_count") == 3
