"""``bench/routing/run.py``'s own parts: the router configuration it writes and how it counts a stream."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from ferry_mock_engine.config import EngineConfig
from ferry_mock_engine.metrics import EngineMetrics, Load
from ferry_router.scheduler.config import build_scheduler, parse_config
from ferry_router.scheduler.kvcache_aware import KVCacheAware

from tests.support.benchmarks import bench_module

run = bench_module("routing.run")
Outcome, one_request, router_yaml = run.Outcome, run.one_request, run.router_yaml
EngineSide, reading_of = run.EngineSide, run.reading_of
process_name = run.process_name

CUT = b'data: {"error": {"message": "the upstream engine sent nothing for 120s", "type": "server_error"}}\n\n'
TOKEN = b'data: {"choices": [{"delta": {"content": "cache"}}]}\n\n'


def test_the_router_gets_kthenas_kvcache_arguments_with_its_ttl_in_wall_time() -> None:
    config = parse_config(
        router_yaml([("least-request", 1), ("kvcache-aware", 1)], block_size=128, scale=4.0)
    )
    assert config.args["kvcache-aware"] == {
        "blockSizeToHash": 128,
        "maxBlocksToMatch": 128,
        "pendingTTLSeconds": 40,
    }
    plugin = next(p for p, _ in build_scheduler(config).scorers if isinstance(p, KVCacheAware))
    assert (plugin.block_size, plugin.index.pending_ttl) == (128, 40.0)


def test_the_affinity_filter_set_enables_kvcache_aware_as_a_filter_too() -> None:
    scorers = run.EXTRA_SETS["LeastRequest+KVCacheAware/filter"]
    filters = run.FILTERS["LeastRequest+KVCacheAware/filter"]
    scheduler = build_scheduler(
        parse_config(router_yaml(scorers, block_size=128, scale=4.0, filters=filters))
    )
    assert [f.name for f in scheduler.filters] == ["kvcache-aware"]
    assert [(p.name, w) for p, w in scheduler.scorers] == [("least-request", 1.0), ("kvcache-aware", 1.0)]
    assert scheduler.filters[0] is scheduler.scorers[1][0]


async def _serve(*chunks: bytes) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/v1/chat/completions"


async def _request_through(*chunks: bytes) -> Outcome:
    """What ``one_request`` records for one stream of these chunks."""
    runner, url = await _serve(*chunks)
    out = Outcome()
    try:
        async with aiohttp.ClientSession() as http:
            await one_request(http, url, [{"role": "user", "content": "q"}], 4, out)
    finally:
        await runner.cleanup()
    return out


async def test_a_stream_the_router_cut_is_a_failed_request_not_a_fast_one() -> None:
    out = await _request_through(TOKEN, CUT)
    assert (out.ok, out.failed, out.e2e) == (0, 1, [])


async def test_a_whole_stream_is_timed() -> None:
    out = await _request_through(TOKEN, TOKEN, b"data: [DONE]\n\n")
    assert (out.ok, out.failed, len(out.ttft), len(out.e2e)) == (1, 0, 1, 1)


def test_the_engines_own_ttft_is_read_from_their_histogram_over_the_set() -> None:
    """The engine-side TTFT columns: the difference of two readings of an engine's histogram, its
    median interpolated within the bucket that holds it (as Prometheus' histogram_quantile)."""
    engine = EngineMetrics(EngineConfig(served_model_names=["m"]), Load())
    engine.observe_first_token(7.0)  # before the set: left out
    before = reading_of(engine.exposition().decode())
    for seconds in (0.3, 0.3, 3.0, 30.0):
        engine.observe_first_token(seconds)
    side = EngineSide()
    side.add(reading_of(engine.exposition().decode()), before)
    assert side.ttft_cumulative[-1] == 4
    assert side.ttft_quantile(0.5) == 0.5  # 2 of 4 within (0.25, 0.5]: the bucket's upper bound
    assert side.ttft_mean() == 33.6 / 4
    assert EngineSide().ttft_quantile(0.5) != EngineSide().ttft_quantile(0.5)  # none: NaN


def test_every_set_names_its_router_process_as_a_plain_file_name() -> None:
    assert process_name("LeastRequest+KVCacheAware/filter") == "router-LeastRequest-KVCacheAware-filter"
    assert process_name("GPU usage") == "router-GPU-usage"
