"""The engine simulator: prefix caching, LRU eviction, the step model, metrics and vLLM-format KV events."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Awaitable, Callable

import aiohttp
import msgpack
import pytest
import zmq
import zmq.asyncio
from ferry_mock_engine import MockEngine
from ferry_mock_engine.kv_events import BlockRemoved, BlockStored, KVEventsConfig, bind_address
from ferry_mock_engine.kvcache import BlockPool, chain_hash, prompt_block_hashes
from ferry_mock_engine.profiles import PROFILES, attended_pairs, profile_named
from ferry_mock_engine.simulator import END, Simulator

EngineFactory = Callable[..., Awaitable[MockEngine]]
PROFILE = "deepseek-r1-distill-qwen-7b-h100"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tokens(start: int, n: int) -> list[int]:
    return list(range(start, start + n))


# ---------------------------------------------------------------------- the block pool


def test_chained_hashes_depend_on_every_earlier_block() -> None:
    a = prompt_block_hashes(tokens(0, 48), 16, seed=1)
    b = prompt_block_hashes([99, *tokens(1, 47)], 16, seed=1)
    assert len(a) == 3
    assert a[0] == chain_hash(1, tokens(0, 16))
    assert all(x != y for x, y in zip(a, b, strict=True))  # one changed token changes every later hash
    assert prompt_block_hashes(tokens(0, 47), 16, seed=1) == a[:2]  # only full blocks are hashed


def test_pool_caches_full_blocks_and_finds_the_longest_prefix() -> None:
    pool = BlockPool(num_blocks=8, block_size=4)
    prompt = tokens(0, 12)
    hashes = prompt_block_hashes(prompt, 4)
    blocks = pool.allocate(3)
    assert blocks is not None
    pool.cache(blocks, hashes, None, prompt)
    [stored] = pool.take_events()
    assert isinstance(stored, BlockStored)
    assert stored.block_hashes == hashes
    assert stored.parent_block_hash is None
    assert stored.token_ids == prompt
    assert pool.usage == pytest.approx(3 / 8)
    pool.release(blocks)
    assert pool.usage == 0.0  # cached but unused blocks count as free, as in vLLM
    other = prompt_block_hashes([*tokens(0, 8), 7, 7, 7, 7], 4)
    assert pool.cached_prefix(other) == blocks[:2]


def test_lru_eviction_takes_the_least_recently_freed_and_reports_it() -> None:
    pool = BlockPool(num_blocks=4, block_size=2)
    first, second = tokens(0, 4), tokens(100, 4)
    for prompt in (first, second):
        blocks = pool.allocate(2)
        assert blocks is not None
        pool.cache(blocks, prompt_block_hashes(prompt, 2), None, prompt)
        pool.release(blocks)
    pool.take_events()
    # Reuse `first`: its blocks become the most recently freed, so `second` is evicted next.
    hits = pool.cached_prefix(prompt_block_hashes(first, 2))
    assert len(hits) == 2
    pool.touch(hits)
    pool.release(hits)
    fresh = pool.allocate(2)
    assert fresh is not None
    [removed] = pool.take_events()
    assert isinstance(removed, BlockRemoved)
    assert sorted(removed.block_hashes) == sorted(prompt_block_hashes(second, 2))
    assert pool.cached_prefix(prompt_block_hashes(second, 2)) == []
    assert len(pool.cached_prefix(prompt_block_hashes(first, 2))) == 2
    assert pool.allocate(3) is None  # two blocks in use, two free
    assert not pool.reset()  # refused while blocks are in use
    pool.release(fresh)
    assert pool.reset()
    assert pool.cached_prefix(prompt_block_hashes(first, 2)) == []
    assert [type(e).__name__ for e in pool.take_events()] == ["AllBlocksCleared"]


# ---------------------------------------------------------------------- the step model


async def run(sim: Simulator, prompt: list[int], output: int) -> tuple[float, float]:
    """(simulated TTFT, simulated time of the steps that prefilled it) of one request."""
    req = sim.request(f"r{id(prompt)}", prompt, output)
    sim.submit(req)
    while await req.tokens.get() != END:
        pass
    assert req.first_token_at is not None
    return req.first_token_at - req.arrival, req.prefill_time


def simulator(blocks: int = 4096, **kw: object) -> Simulator:
    profile = profile_named(PROFILE)
    return Simulator(
        profile,
        BlockPool(blocks, 16),
        max_num_seqs=int(kw.pop("max_num_seqs", 256)),  # type: ignore[call-overload]
        max_num_batched_tokens=8192,
        time_scale=float(kw.pop("time_scale", 0.05)),  # type: ignore[arg-type]
    )


async def test_cache_hits_cut_prefill_time() -> None:
    sim = simulator(time_scale=0.2)
    sim.start()
    try:
        system = tokens(1000, 4096)
        cold_ttft, cold = await run(sim, [*system, *tokens(1, 64)], 4)
        warm_ttft, warm = await run(sim, [*system, *tokens(5000, 64)], 4)
    finally:
        await sim.stop()
    profile = profile_named(PROFILE)
    # the whole prompt was prefilled; then only the question, attending to the cached system prompt
    assert cold == pytest.approx(profile.step_time(4160, 4160, attended_pairs(0, 4160)))
    assert warm == pytest.approx(profile.step_time(64, 4160, attended_pairs(4096, 64)))
    assert warm < cold / 10
    assert cold_ttft >= cold  # wall-clock TTFT (event-loop jitter adds, never subtracts)
    assert warm_ttft < cold_ttft
    assert sim.stats.prefix_queries == 2 * 4160
    assert sim.stats.prefix_hits == 4096


async def test_decode_steps_grow_with_the_batch_and_max_num_seqs_queues() -> None:
    profile = profile_named(PROFILE)
    growth = profile.step_time(0, 64 * 4096) - profile.step_time(0, 4096)
    assert growth == pytest.approx(63 * 4096 * profile.kv_read_per_token)
    assert growth > 0.004  # 63 more sequences of 4k context: attention reads 14 GB more per step
    sim = simulator(max_num_seqs=2)  # stepped by hand: no clock involved
    reqs = [sim.request(f"q{i}", tokens(i * 1000, 64), 8) for i in range(4)]
    for req in reqs:
        sim.submit(req)
    durations = []
    admitted_at: dict[str, int] = {}
    step = 0
    while sim.running or sim.waiting:
        duration = sim.step_plan()
        assert duration is not None
        durations.append(duration)
        assert len(sim.running) <= 2
        for req in sim.running:
            admitted_at.setdefault(req.id, step)
        sim.step_finish()
        step += 1
    assert admitted_at["q0"] == admitted_at["q1"] == 0
    assert admitted_at["q2"] >= 8  # waited until the first two had their 8 tokens
    assert all(r.output == 8 and r.finished for r in reqs)
    decode_steps = [d for d in durations if d < profile.step_time(1, 0)]
    assert decode_steps  # decode-only steps are cheaper than any prefill step


def test_prefill_attention_is_quadratic_and_counts_the_cached_prefix() -> None:
    assert attended_pairs(0, 1) == 1
    assert attended_pairs(0, 4) == 1 + 2 + 3 + 4
    assert attended_pairs(10, 2) == 11 + 12
    assert attended_pairs(0, 6) == attended_pairs(0, 4) + attended_pairs(4, 2)  # chunking adds up
    profile = profile_named(PROFILE)
    cold = profile.step_time(4160, 0, attended_pairs(0, 4160)) - profile.step_time(0, 0)
    assert 1.04 < cold / (4160 * profile.prefill_per_token) < 1.07  # attention: ~5 % of a 4k prompt
    warm = profile.step_time(64, 0, attended_pairs(4096, 64)) - profile.step_time(0, 0)
    assert 1.09 < warm / (64 * profile.prefill_per_token) < 1.13  # a question after 4k: ~11 %


def test_the_kv_pool_is_what_weights_and_the_largest_step_leave() -> None:
    profile = profile_named(PROFILE)  # 80 GiB x 0.9 - 15.2 GB of weights - 125 KiB per batched token
    assert profile.kv_cache_blocks == profile.kv_blocks(16, 8192) == 66551
    assert profile.kv_blocks(16, 65536) == 58551  # Kthena's step: 7.3 GB more activations
    assert profile.kv_blocks(128, 65536) == pytest.approx(58551 / 8, abs=1)
    assert profile_named("qwen2.5-0.5b-l40s").kv_blocks(16, 8192) > profile.kv_cache_blocks  # a tiny model


def test_every_profile_names_its_sources() -> None:
    for profile in PROFILES.values():
        assert profile.sources
        assert profile.kv_cache_blocks > 0
        assert profile.prefill_per_token > 0


# ---------------------------------------------------------------------- the engine: metrics and events


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed:\n{text}")


async def test_engine_reports_prefix_cache_hits_and_load(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    engine = await start_engine(
        "--served-model-name", "m", "--sim-profile", PROFILE, "--time-scale", "0.2", "--max-num-seqs", "1"
    )
    system = "You are a careful assistant. " * 160  # ~1,160 tokens
    ask = [
        http.post(
            f"{engine.url}/v1/chat/completions",
            json={
                "model": "m",
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
            },
        )
        for q in ("first question", "second question", "third question")
    ]
    tasks = [asyncio.ensure_future(a) for a in ask]
    scraped = ""
    for _ in range(200):
        async with http.get(f"{engine.url}/metrics") as resp:
            scraped = await resp.text()
        if metric(scraped, "vllm:num_requests_waiting") >= 1:
            break
        await asyncio.sleep(0.005)
    assert metric(scraped, "vllm:num_requests_running") == 1
    assert metric(scraped, "vllm:num_requests_waiting") >= 1
    assert metric(scraped, "vllm:kv_cache_usage_perc") > 0
    for response in await asyncio.gather(*tasks):
        assert response.status == 200
        response.release()
    async with http.get(f"{engine.url}/metrics") as resp:
        scraped = await resp.text()
    queries = metric(scraped, "vllm:prefix_cache_queries_total")
    hits = metric(scraped, "vllm:prefix_cache_hits_total")
    assert queries > 3000
    assert hits >= 2 * 1100  # the 2nd and 3rd requests found the system prompt cached
    assert metric(scraped, "vllm:time_to_first_token_seconds_count") == 3
    assert metric(scraped, "vllm:kv_cache_usage_perc") == 0  # everything finished: all blocks free


def test_kv_events_config_is_vllms() -> None:
    config = KVEventsConfig.parse('{"enable_kv_cache_events": true, "topic": "kv-events"}')
    assert (config.enable, config.publisher, config.endpoint, config.topic) == (
        True, "zmq", "tcp://*:5557", "kv-events",
    )  # fmt: skip
    assert not KVEventsConfig.parse('{"enable_kv_cache_events": false}').enable
    assert bind_address("tcp://*:5557", "127.0.3.4") == "tcp://127.0.3.4:5557"
    with pytest.raises(ValueError, match="publisher"):
        KVEventsConfig.parse('{"enable_kv_cache_events": true, "publisher": "kafka"}')


async def test_events_reach_a_zmq_subscriber_in_vllms_wire_format(
    start_engine: EngineFactory, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    config = f'{{"enable_kv_cache_events":true,"endpoint":"tcp://*:{port}","topic":"kv-events"}}'
    engine = await start_engine(
        "--served-model-name", "m", "--kv-events-config", config, "--time-scale", "0.05",
        "--block-size", "16", "--kv-cache-size", "12",
    )  # fmt: skip
    ctx = zmq.asyncio.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.connect(f"tcp://127.0.0.1:{port}")
    sub.setsockopt(zmq.SUBSCRIBE, b"kv-events")
    try:
        prompt = "abcd" * 100  # 100 tokens: 6 full blocks of 16
        async with http.post(f"{engine.url}/tokenize", json={"model": "m", "prompt": prompt}) as resp:
            ids = (await resp.json())["tokens"]
        # PUB/SUB drops messages sent before the subscription is joined: retry until one arrives.
        frames = None
        for attempt in range(50):
            body = {"model": "m", "prompt": f"{attempt:04d}" + prompt[4:], "max_tokens": 2}
            if attempt == 0:
                body["prompt"] = prompt
            async with http.post(f"{engine.url}/v1/completions", json=body) as resp:
                assert resp.status == 200
            try:
                frames = await asyncio.wait_for(sub.recv_multipart(), 0.2)
                first_prompt = body["prompt"]
                break
            except TimeoutError:
                continue
        assert frames is not None, "no KV event batch received"
        topic, seq, payload = frames
        assert topic == b"kv-events"
        assert len(seq) == 8
        ts, events, dp_rank = msgpack.unpackb(payload)
        assert isinstance(ts, float)
        assert dp_rank == 0
        # A retry's batch may start with evictions of an earlier attempt's blocks (the pool is small).
        stored = [event for event in events if event[0] == "BlockStored"]
        assert stored, f"no BlockStored in {events}"
        tag, hashes, parent, token_ids, block_size, lora_id, medium = stored[0]
        assert (tag, parent, block_size, lora_id, medium) == ("BlockStored", None, 16, None, "GPU")
        assert len(hashes) == 6
        if first_prompt == prompt:
            assert token_ids == ids[:96]
        # A different prompt that needs the whole pool (12 blocks of 16) evicts those blocks.
        async with http.post(
            f"{engine.url}/v1/completions", json={"model": "m", "prompt": "wxyz" * 190, "max_tokens": 1}
        ) as resp:
            assert resp.status == 200
        removed: list[int] = []
        for _ in range(20):
            _, _, payload = await asyncio.wait_for(sub.recv_multipart(), 5)
            for event in msgpack.unpackb(payload)[1]:
                if event[0] == "BlockRemoved":
                    removed += event[1]
            if set(hashes) <= set(removed):
                break
        assert set(hashes) <= set(removed)
    finally:
        sub.close(linger=0)


def stepped(blocks: int = 64, block_size: int = 4) -> tuple[Simulator, list[BlockStored]]:
    """A simulator stepped by hand, and the BlockStored events it publishes."""
    stored: list[BlockStored] = []
    sim = Simulator(
        profile_named(PROFILE), BlockPool(blocks, block_size), max_num_seqs=8, max_num_batched_tokens=1000,
        publish=lambda events: stored.extend(e for e in events if isinstance(e, BlockStored)),
        clock=lambda: 0.0,
    )  # fmt: skip
    return sim, stored


def step_until(sim: Simulator, done: Callable[[], bool]) -> None:
    while not done():
        assert sim.step_plan() is not None
        sim.step_finish()


def test_generated_tokens_fill_blocks_that_are_cached_and_announced() -> None:
    sim, stored = stepped()
    prompt = tokens(1, 18)  # 4 full blocks and 2 tokens; 10 output tokens complete 3 more blocks
    req = sim.request("gen", prompt, 10)
    sim.submit(req)
    step_until(sim, lambda: req.finished)
    everything = [*prompt, *req.output_ids]
    assert [t for event in stored for t in event.token_ids] == everything[:28]
    assert [h for event in stored for h in event.block_hashes] == prompt_block_hashes(everything, 4)
    assert all(event.parent_block_hash == prev.block_hashes[-1] for prev, event in itertools.pairwise(stored))
    assert len(set(req.output_ids)) == 10
    assert sim.request("other", prompt, 10).output_ids != req.output_ids  # sampled text is its own


def test_a_preempted_request_finds_its_prompt_and_output_blocks_when_it_comes_back() -> None:
    sim, _ = stepped()
    req = sim.request("long", tokens(1, 18), 12)
    sim.submit(req)
    step_until(sim, lambda: req.output == 8)  # 26 tokens: 6 full blocks cached
    sim._preempt(req)
    step_until(sim, lambda: req.is_running)
    assert req.hit_tokens == 24  # every full block, prompt and generated
    assert sim.stats.prefix_queries == 18 + 26
    step_until(sim, lambda: req.finished)
    assert req.output == 12


def test_a_lora_adapters_blocks_are_not_the_base_models() -> None:
    sim, stored = stepped()
    prompt = tokens(1, 16)
    adapter = sim.request("a", prompt, 1, lora="sql-lora", lora_id=1)
    sim.submit(adapter)
    step_until(sim, lambda: adapter.finished)
    assert [(e.lora_id, len(e.block_hashes)) for e in stored] == [(1, 4)]
    assert stored[0].block_hashes != prompt_block_hashes(prompt, 4)
    base = sim.request("b", prompt, 1)
    sim.submit(base)
    step_until(sim, lambda: base.finished)
    assert base.hit_tokens == 0  # the adapter's KV of the same tokens is not the base model's
    assert stored[-1].lora_id is None
    assert stored[-1].block_hashes == prompt_block_hashes(prompt, 4)[: len(stored[-1].block_hashes)]
