"""The KV block index and the kvcache-aware plugin (tokenizing through a real simulated engine)."""

from __future__ import annotations

import aiohttp
import pytest
from ferry_mock_engine import MockEngine, config_from_argv
from ferry_router.scheduler.config import build_scheduler, parse_config
from ferry_router.scheduler.framework import SchedulingContext
from ferry_router.scheduler.kvcache_aware import TOKENS_KEY, KVCacheAware, affinity_keep, tokenize_body
from ferry_router.state.kv_index import KvIndex
from ferry_router.state.resources import Pod
from ferry_router.state.table import Endpoint
from ferry_schemas import sim_tokenizer
from ferry_schemas.kv import ROOT_HASH, KvBlockEvents, lora_root, token_block_hashes

H = token_block_hashes(list(range(64)), 16)  # 4 chained blocks


def msg(pod: str, seq: int, *, epoch: str = "e1", snapshot: bool = False, **kw: object) -> KvBlockEvents:
    return KvBlockEvents(
        namespace="ns", pod=pod, model="m", epoch=epoch, seq=seq, block_size=16, snapshot=snapshot, **kw
    )


def endpoint(name: str, ip: str = "127.0.0.1", port: int = 8000) -> Endpoint:
    return Endpoint(pod=Pod("ns", name, ip, {}, True), port=port, engine="vLLM")


def test_index_applies_changes_and_snapshots_once_each() -> None:
    index = KvIndex()
    assert index.apply(msg("a", 1, snapshot=True, stored=H[:1]))
    assert index.apply(msg("a", 2, stored=H[1:3]))
    assert not index.apply(msg("a", 2, removed=H[:3]))  # a redelivered message changes nothing
    assert index.match(H, {"ns/a"}) == {"ns/a": 3}
    assert index.apply(msg("a", 3, removed=[H[1]]))
    assert index.match(H, {"ns/a"}) == {"ns/a": 1}  # only a contiguous prefix counts
    assert index.apply(msg("a", 4, snapshot=True, stored=H))  # a snapshot replaces what was known
    assert index.match(H, {"ns/a"}) == {"ns/a": 4}
    assert index.apply(msg("a", 1, epoch="e2", snapshot=True))  # a new sidecar starts empty
    assert index.match(H, {"ns/a"}) == {}


def test_index_drops_a_pod_that_is_gone_and_honours_candidates() -> None:
    index = KvIndex()
    index.apply(msg("a", 1, stored=H))
    index.apply(msg("b", 1, stored=H[:2]))
    assert index.match(H, {"ns/a", "ns/b"}) == {"ns/a": 4, "ns/b": 2}
    assert index.match(H, {"ns/b"}) == {"ns/b": 2}
    index.drop_pod("ns/a")
    assert index.match(H, {"ns/a", "ns/b"}) == {"ns/b": 2}
    assert index.owners.keys() == set(H[:2])


def test_blocks_just_sent_to_a_pod_count_until_they_expire_or_are_evicted() -> None:
    """The prompts this router sends are held there before the pod's events can say so."""
    now = [100.0]
    index = KvIndex(pending_ttl=5.0, clock=lambda: now[0])
    index.expect("ns/a", H[:3])
    assert index.match(H, {"ns/a", "ns/b"}) == {"ns/a": 3}
    index.apply(msg("a", 1, stored=H[:2]))  # the events confirm two blocks ...
    index.apply(msg("a", 2, removed=[H[1]]))  # ... and evict one: not expected there any more
    assert index.match(H, {"ns/a"}) == {"ns/a": 1}
    now[0] = 104.0
    index.expect("ns/b", H)
    now[0] = 105.5  # a's pending block 2 expired; b's are fresh
    assert index.match(H, {"ns/a", "ns/b"}) == {"ns/a": 1, "ns/b": 4}
    index.drop_pod("ns/b")
    assert index.match(H, {"ns/a", "ns/b"}) == {"ns/a": 1}
    off = KvIndex()  # pendingTTLSeconds 0: Kthena's behaviour, events only
    off.expect("ns/a", H)
    assert off.match(H, {"ns/a"}) == {}


def test_footprint_counts_held_and_expected_blocks_once() -> None:
    """What the affinity filter places new prompts by: each block a pod holds or was just sent, once."""
    now = [100.0]
    index = KvIndex(pending_ttl=5.0, clock=lambda: now[0])
    index.apply(msg("a", 1, stored=H[:1]))
    index.expect("ns/a", H)  # block 0 is held already: three more expected
    index.expect("ns/a", H[:2])  # a renewal adds nothing
    assert index.footprint("ns/a") == 4
    assert index.footprint("ns/b") == 0
    index.apply(msg("a", 2, stored=H[1:3]))  # confirmed: held now, expected no more
    assert index.footprint("ns/a") == 4
    index.apply(msg("a", 3, removed=[H[2]]))  # evicted
    assert index.footprint("ns/a") == 3
    now[0] = 105.5  # block 3's expectation ends
    assert index.footprint("ns/a") == 2
    assert index.match(H, {"ns/a"}) == {"ns/a": 2}
    index.expect("ns/a", H)
    index.drop_pod("ns/a")
    assert index.footprint("ns/a") == 0


@pytest.mark.parametrize(
    ("held", "waiting", "inflight", "footprint", "kept"),
    [
        # nobody holds the prompt: the caches holding the fewest blocks, within one prompt (4 blocks)
        ([0, 0, 0], [0, 0, 0], [9, 1, 5], [10, 14, 15], [0, 1]),
        ([1, 0, 0], [0, 0, 0], [0, 0, 0], [10, 0, 3], [1, 2]),  # 1 of 4 is under minMatchRatio
        # the holders of the longest prefix, however busy, while nobody idles beside them
        ([4, 2, 4], [0, 0, 0], [50, 1, 60], [0, 0, 0], [0, 2]),
        ([4, 0, 0], [3, 0, 0], [90, 40, 50], [0, 0, 0], [0]),  # queued, but nobody is underused
        # every holder queues and an engine is underused (nothing waiting, < 1/4 of the mean)
        ([4, 0, 0], [3, 0, 2], [150, 10, 90], [0, 0, 0], [1]),
        ([4, 4, 0], [3, 0, 0], [150, 50, 4], [0, 0, 0], [0, 1]),  # one holder does not queue
    ],
)
def test_affinity_keep(
    held: list[int], waiting: list[float], inflight: list[int], footprint: list[int], kept: list[int]
) -> None:
    assert affinity_keep(held, 4, waiting, inflight, footprint) == kept


def test_the_affinity_filter_keeps_the_holder_and_shares_state_with_the_scorer() -> None:
    plugins = "{Filter: {enabled: [kvcache-aware]}, Score: {enabled: [least-request, kvcache-aware]}}"
    config = parse_config(f"scheduler: {{plugins: {plugins}}}")
    scheduler = build_scheduler(config)
    plugin = scheduler.filters[0]
    assert isinstance(plugin, KVCacheAware)
    assert plugin is scheduler.scorers[1][0]  # one index, one tokenization
    assert scheduler.preparers == [plugin]
    assert scheduler.dispatch_hooks == [plugin]
    a, b = endpoint("a"), endpoint("b")
    b.inflight = 0
    a.inflight = 7  # the holder is busier: least-request alone would pick b
    plugin.index.apply(msg("a", 1, stored=H))
    ctx = SchedulingContext(model="m", upstream_model="m", prompt="p", scratch={TOKENS_KEY: H})
    assert scheduler.rank(ctx, [a, b]) == [a]
    scheduler.dispatching(ctx, a)
    fresh = SchedulingContext(model="m", upstream_model="m", prompt="q", scratch={TOKENS_KEY: [7, 8, 9]})
    assert scheduler.rank(fresh, [a, b])[0] is b  # a new prompt goes to the emptier cache
    for bad in ("minMatchRatio: 2", "underusedInflightRatio: many"):
        with pytest.raises(ValueError, match=bad.split(":")[0]):
            parse_config(f"scheduler: {{pluginConfig: [{{name: kvcache-aware, args: {{{bad}}}}}]}}")


def test_pending_ttl_is_checked_at_load() -> None:
    assert KVCacheAware({}).index.pending_ttl == 10.0
    assert KVCacheAware({"pendingTTLSeconds": 0}).index.pending_ttl == 0.0
    for bad in (-1, "soon", float("inf")):
        args = f"{{pendingTTLSeconds: {bad}}}"
        with pytest.raises(ValueError, match="pendingTTLSeconds"):
            parse_config(f"scheduler: {{pluginConfig: [{{name: kvcache-aware, args: {args}}}]}}")


def test_tokenize_bodies_follow_vllm_and_sglang() -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert tokenize_body("vllm", "m", chat, "user: hi") == {
        "model": "m", "messages": chat["messages"], "add_special_tokens": False,
        "add_generation_prompt": True, "return_token_strs": False,
    }  # fmt: skip
    assert tokenize_body("sglang", "m", {"prompt": "p"}, "p") == {
        "model": "m", "prompt": "p", "add_special_tokens": True,
    }  # fmt: skip


async def test_plugin_tokenizes_through_the_engine_and_scores_the_prefix_holder() -> None:
    engine = MockEngine(config_from_argv(["--served-model-name", "m", "--host", "127.0.0.1", "--port", "0"]))
    await engine.start()
    plugin = KVCacheAware({"blockSizeToHash": 16, "maxBlocksToMatch": 3})
    try:
        a, b = endpoint("a", port=engine.port), endpoint("b", port=engine.port)
        prompt = "x" * 400  # 100 tokens: 6 full blocks, 3 matched at most
        ctx = SchedulingContext(model="alias", upstream_model="m", prompt=prompt, body={"prompt": prompt})
        await plugin.prepare(ctx, [a, b])
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{engine.url}/tokenize", json={"model": "m", "prompt": prompt}) as resp,
        ):
            tokens = (await resp.json())["tokens"]
        hashes = token_block_hashes(tokens, 16, 3)
        assert ctx.scratch[TOKENS_KEY] == hashes
        plugin.index.apply(msg("a", 1, stored=hashes[:2]))
        plugin.index.apply(msg("b", 1, stored=hashes[1:]))  # no block 0: no score
        assert plugin.score(ctx, [a, b]) == [66.0, 0.0]
        plugin.forget(a)
        assert plugin.score(ctx, [a, b]) == [0.0, 0.0]
        unreachable = SchedulingContext(model="m", upstream_model="m", prompt="p")
        await plugin.prepare(unreachable, [endpoint("c", ip="127.0.0.1", port=1)])
        assert plugin.score(unreachable, [a]) == [0.0]  # tokenization failed: nobody is preferred
    finally:
        await plugin.close()
        await engine.stop()


async def test_local_tokenizer_gives_the_engines_tokens_without_asking_it() -> None:
    engine = MockEngine(config_from_argv(["--served-model-name", "m", "--host", "127.0.0.1", "--port", "0"]))
    await engine.start()
    plugin = KVCacheAware({"blockSizeToHash": 16, "localTokenizer": "ferry-mock-engine"})
    unreachable = [endpoint("a", port=1)]  # a /tokenize call would fail: the hashes come from the router
    chat = {"messages": [{"role": "system", "content": "s" * 300}, {"role": "user", "content": "hi"}]}
    try:
        for body in (chat, {"prompt": "p" * 300}):
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{engine.url}/tokenize", json={"model": "m", **body}) as resp,
            ):
                tokens = (await resp.json())["tokens"]
            prompt = str(body.get("prompt", "rendered by the router, unused for chat"))
            ctx = SchedulingContext(model="m", upstream_model="m", prompt=prompt, body=body)
            await plugin.prepare(ctx, unreachable)
            assert ctx.scratch[TOKENS_KEY] == token_block_hashes(tokens, 16, 128)
    finally:
        await plugin.close()
        await engine.stop()


async def test_an_adapters_prompt_is_hashed_from_the_adapters_root() -> None:
    """A LoRA request matches the blocks the sidecars key by the adapter's name, not the base's."""
    plugin = KVCacheAware({"blockSizeToHash": 16, "localTokenizer": "ferry-mock-engine"})
    prompt = "p" * 300
    body = {"prompt": prompt}
    tokens = sim_tokenizer.tokenize(body)
    listed = endpoint("a")
    listed.metrics.models, listed.metrics.base_models = frozenset({"base", "sql"}), ("base",)
    cases = [
        (
            SchedulingContext(model="sql", upstream_model="sql", prompt=prompt, body=body, lora=True),
            [],
            "sql",
        ),
        (SchedulingContext(model="alias", upstream_model="sql", prompt=prompt, body=body), [listed], "sql"),
        (SchedulingContext(model="alias", upstream_model="base", prompt=prompt, body=body), [listed], None),
    ]
    for ctx, endpoints, adapter in cases:
        await plugin.prepare(ctx, endpoints)
        root = ROOT_HASH if adapter is None else lora_root(adapter)
        assert ctx.scratch[TOKENS_KEY] == token_block_hashes(tokens, 16, 128, root)
    plugin.index.apply(msg("a", 1, stored=token_block_hashes(tokens, 16, 128)))  # base-model KV only
    assert plugin.score(cases[0][0], [listed]) == [0.0]
    assert plugin.score(cases[2][0], [listed]) == [100.0]


def test_an_unknown_local_tokenizer_is_a_configuration_error() -> None:
    text = "scheduler:\n  pluginConfig:\n  - {name: kvcache-aware, args: {localTokenizer: gpt2}}\n"
    known = r"localTokenizer: unknown tokenizer 'gpt2'; known: ferry-mock-engine"
    with pytest.raises(ValueError, match=known):
        parse_config(text)
