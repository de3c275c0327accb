"""Scheduler plugin and framework table tests (spec §18.3)."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Sequence

import pytest
import xxhash
from ferry_router.scheduler import SchedulingContext, SchedulingError, build_scheduler
from ferry_router.scheduler.config import DEFAULT_YAML, parse_config
from ferry_router.scheduler.framework import Scheduler
from ferry_router.scheduler.gpu_usage import GPUUsage
from ferry_router.scheduler.least_latency import LeastLatency
from ferry_router.scheduler.least_request import LeastRequest
from ferry_router.scheduler.lora_affinity import LoraAffinity
from ferry_router.scheduler.prefix_cache import PrefixCache, hash_prompt
from ferry_router.scheduler.random_score import RandomScore
from ferry_router.state.observed_latency import MAX_AGE, ObservedLatency
from ferry_router.state.resources import Pod
from ferry_router.state.table import Endpoint, EndpointMetrics, PDSets


def ep(name: str, **metrics: float) -> Endpoint:
    inflight = int(metrics.pop("inflight", 0))
    models = metrics.pop("models", None)
    e = Endpoint(pod=Pod("default", name, "127.0.0.1", {}, True), port=8000, engine="vllm")
    e.metrics = EndpointMetrics(**metrics)  # type: ignore[arg-type]
    e.metrics.models = models  # type: ignore[assignment]
    e.inflight = inflight
    return e


CTX = SchedulingContext(model="m", upstream_model="served", prompt="hello world")


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([{}, {}, {}], [100, 100, 100]),  # all idle
        ([{"inflight": 0}, {"inflight": 10}, {"inflight": 5}], [100, 0, 50]),
        ([{"inflight": 1}, {"inflight": 2}, {"inflight": 3}], [66, 33, 0]),
        # readings taken at the current in-flight count: Kthena's case (5 not started on p1)
        (
            [
                {"inflight": 5, "running": 5, "inflight_at_sample": 5},
                {"inflight": 5, "inflight_at_sample": 5},
                {},
            ],
            [99, 0, 100],
        ),
    ],
)
def test_least_request_score(pods: list[dict], expected: list[int]) -> None:
    endpoints = [ep(f"p{i}", **p) for i, p in enumerate(pods)]
    assert LeastRequest().score(CTX, endpoints) == expected


def test_least_request_projects_running_to_now() -> None:
    """Requests sent since the reading run (they are not 100 waiting ones each), requests that ended
    since free their slots, and an engine that was full and queueing at the reading queues what came
    since."""
    sent_since = ep("sent", running=10, inflight=14, inflight_at_sample=10)
    steady = ep("steady", running=10, inflight=10, inflight_at_sample=10)
    assert LeastRequest().score(CTX, [sent_since, steady]) == [0, 28]  # raw gauge: [0, 97]
    # A reading taken just before a burst of completions (as logged in bench/routing): the holder of
    # a prompt's prefix took 4 since its reading, one full engine saw 69 end, one full engine queued.
    holder = ep("holder", running=101, inflight=105, inflight_at_sample=101)
    drained = ep("drained", running=80, waiting=6, kv_cache_usage=0.95, inflight=26, inflight_at_sample=95)
    queueing = ep(
        "queueing", running=103, waiting=6, kv_cache_usage=0.97, inflight=109, inflight_at_sample=103
    )
    assert LeastRequest().score(CTX, [holder, drained, queueing]) == [85, 96, 0]  # raw: [28, 96, 0]
    never_read = ep("new", inflight=3)  # judged by the in-flight count alone
    assert LeastRequest().score(CTX, [never_read, steady]) == [70, 0]


def test_least_request_counts_a_queue_only_where_the_engine_was_full() -> None:
    """Requests waiting in an engine with KV cache to spare are a step's arrivals, admitted at the
    next step: they and those sent since run. In a full engine they queue, and so does what came since."""
    transient = ep(
        "transient", running=100, waiting=6, kv_cache_usage=0.5, inflight=110, inflight_at_sample=106
    )
    full = ep("full", running=100, waiting=6, kv_cache_usage=0.95, inflight=110, inflight_at_sample=106)
    idle = ep("idle")
    assert LeastRequest().score(CTX, [transient, full, idle]) == [90, 0, 100]  # bases 110, 1110, 0
    # what the engine did not report at all (on its way there at the reading) is not started yet
    unreported = ep("unreported", running=8, inflight=10, inflight_at_sample=10)
    assert LeastRequest().score(CTX, [unreported, idle]) == [0, 100]


def test_least_request_never_projects_running_below_zero() -> None:
    """A reading scraped before the router's request reached the engine (running 0) but applied while
    it was in flight counts it as seen; once it has ended the engine is idle, not one request short."""
    holder = ep("holder", running=0, inflight=0, inflight_at_sample=1)  # unsampled -1
    other = ep("other")
    assert LeastRequest().score(CTX, [holder, other]) == [100, 100]  # unclamped: [0, 100]


@pytest.mark.parametrize(
    ("args", "waiting", "kept"),
    [
        ({}, [0, 9, 10, 20], ["p0", "p1"]),
        ({"maxWaitingRequests": 1}, [0, 1], ["p0"]),
        ({"maxWaitingRequests": 0}, [9, 10], ["p0"]),  # 0 means default 10
        ({"maxWaitingRequests": "x"}, [9, 10], ["p0"]),
    ],
)
def test_least_request_filter(args: dict, waiting: list[int], kept: list[str]) -> None:
    endpoints = [ep(f"p{i}", waiting=w) for i, w in enumerate(waiting)]
    assert [e.name for e in LeastRequest(args).filter(CTX, endpoints)] == kept


def test_gpu_usage() -> None:
    assert GPUUsage().score(
        CTX, [ep("a", kv_cache_usage=0), ep("b", kv_cache_usage=0.5), ep("c", kv_cache_usage=1)]
    ) == [
        100,
        50,
        0,
    ]


def test_gpu_usage_counts_requests_sent_since_the_reading() -> None:
    """A burst must not all go to the engine that looked emptiest a reading ago: each request sent
    since adds what a running one held there (the candidates' mean for an engine that ran none)."""
    a = ep("a", kv_cache_usage=0.2, running=10, inflight=14)
    a.metrics.inflight_at_sample = 10  # 4 sent since: 0.2 + 4 * 0.02
    b = ep("b", kv_cache_usage=0.3, running=10, inflight=10)
    b.metrics.inflight_at_sample = 10
    idle = ep("idle", inflight=5)  # never read: all 5 unseen, at the mean 0.02 each
    done = ep("done", kv_cache_usage=0.1, running=10, inflight=0)
    done.metrics.inflight_at_sample = 20  # more ended than it held: clamped at 0
    assert GPUUsage().score(CTX, [a, b, idle, done]) == [72, 70, 90, 100]


def test_gpu_usage_counts_the_queue_as_the_cache_it_will_hold() -> None:
    """A waiting request will hold what a running one does: an engine whose batch is full and
    whose queue is long is not the emptiest."""
    queued = ep("queued", kv_cache_usage=0.5, running=8, waiting=4)  # 0.5 + 4 * 0.0625
    full = ep("full", kv_cache_usage=0.5, running=8)
    light = ep("light", kv_cache_usage=0.25, running=4)
    assert GPUUsage().score(CTX, [queued, full, light]) == [25, 50, 75]


def test_least_latency_projects_latency_by_the_load_sent_since() -> None:
    """TTFT/TPOT read at a load of 4 are doubled once this router sent 4 more there."""
    fast = ep("fast", ttft=0.1, tpot=0.01, ttft_load=4, tpot_load=4, running=3, waiting=1, inflight=8)
    fast.metrics.inflight_at_sample = 4
    slow = ep("slow", ttft=0.15, tpot=0.015, ttft_load=4, tpot_load=4, running=4, inflight=4)
    slow.metrics.inflight_at_sample = 4
    assert LeastLatency().score(CTX, [fast, slow]) == [0, 100]
    fast.metrics.inflight_at_sample = 8  # a new reading: nothing unseen
    assert LeastLatency().score(CTX, [fast, slow]) == [100, 0]


def test_least_latency_projects_from_the_load_the_latency_was_measured_at() -> None:
    """An engine last measured slow at a load of 40, whose queue has drained to 2 since (readings
    without new samples), is projected at 2/40 of that measure: it is not avoided for good."""
    drained = ep("drained", ttft=2.0, tpot=0.04, ttft_load=40, tpot_load=40, running=2)
    busy = ep("busy", ttft=0.5, tpot=0.02, ttft_load=20, tpot_load=20, running=20)
    assert LeastLatency().score(CTX, [drained, busy]) == [100, 0]  # 0.1 s / 2 ms against 0.5 s / 20 ms
    drained.metrics.ttft_load = drained.metrics.tpot_load = 2  # measured at its present load
    assert LeastLatency().score(CTX, [drained, busy]) == [0, 100]


@pytest.mark.parametrize(
    ("args", "pods", "expected"),
    [
        ({}, [], []),
        ({}, [(0.1, 0.01)], [100]),
        ({}, [(0.1, 0.01), (0.1, 0.01)], [100, 100]),
        ({}, [(0.1, 0.01), (0.1, 0.02)], [100, 50]),  # only TPOT differs, a = 0.5
        ({"TTFTTPOTWeightFactor": 1}, [(0.1, 0.01), (0.2, 0.01)], [100, 0]),
        ({"TTFTTPOTWeightFactor": 0}, [(0.1, 0.01), (0.2, 0.01)], [100, 100]),
        ({}, [(0, 0), (0, 0)], [50, 50]),  # nothing measured: 50 each, as Kthena
        # unmeasured among measured: costs a shade less than their mean per queued request, so it is
        # tried once (Kthena: 50, never tried)
        ({}, [(0, 0), (0.1, 0.01)], [100, 0]),
        ({}, [(0, 0), (0.1, 0.01), (0.3, 0.03)], [51, 100, 0]),
    ],
)
def test_least_latency(args: dict, pods: list[tuple[float, float]], expected: list[int]) -> None:
    endpoints = [ep(f"p{i}", ttft=f, tpot=p, ttft_load=1, tpot_load=1) for i, (f, p) in enumerate(pods)]
    assert LeastLatency(args).score(CTX, endpoints) == expected


def test_least_latency_prefers_what_the_router_measured_while_fresh() -> None:
    """The router's own measures (per request queued there) win over the engine's histograms while
    they are fresh, and are projected onto this router's queue there now."""
    slow_seen = ep("slow-seen", ttft=0.1, tpot=0.01, ttft_load=1, tpot_load=1)
    fast_seen = ep("fast-seen", ttft=0.5, tpot=0.05, ttft_load=1, tpot_load=1)
    assert LeastLatency().score(CTX, [slow_seen, fast_seen]) == [100, 0]  # histograms alone
    now = time.monotonic()
    slow_seen.latency = ObservedLatency(ttft_unit=0.4, tpot_unit=0.04, ttft_at=now, tpot_at=now)
    fast_seen.latency = ObservedLatency(ttft_unit=0.1, tpot_unit=0.01, ttft_at=now, tpot_at=now)
    assert LeastLatency().score(CTX, [slow_seen, fast_seen]) == [0, 100]
    # five of this router's requests wait for a first token on the fast one: 0.6 s / 0.06 s ahead
    fast_seen.latency.awaiting_first = 5
    fast_seen.inflight = 5
    assert LeastLatency().score(CTX, [slow_seen, fast_seen]) == [100, 0]
    # measured too long ago: the histograms again
    fast_seen.latency.awaiting_first = fast_seen.inflight = 0
    slow_seen.latency.ttft_at = slow_seen.latency.tpot_at = now - MAX_AGE - 1
    fast_seen.latency.ttft_at = fast_seen.latency.tpot_at = now - MAX_AGE - 1
    assert LeastLatency().score(CTX, [slow_seen, fast_seen]) == [100, 0]


@pytest.mark.parametrize("bad", [-0.1, 1.1, math.inf, -math.inf, math.nan, "x"])
def test_least_latency_rejects_bad_factor(bad: object) -> None:
    with pytest.raises(ValueError, match="TTFTTPOTWeightFactor"):
        LeastLatency({"TTFTTPOTWeightFactor": bad})


def test_lora_affinity_uses_upstream_name_and_skips_unscraped() -> None:
    endpoints = [ep("has", models=frozenset({"served"})), ep("other", models=frozenset({"x"})), ep("unknown")]
    assert [e.name for e in LoraAffinity().filter(CTX, endpoints)] == ["has"]


def test_random_scores_in_range() -> None:
    scores = RandomScore(rng=random.Random(1)).score(CTX, [ep(str(i)) for i in range(200)])
    assert all(0 <= s <= 100 for s in scores)
    assert len(set(scores)) > 20


def test_hash_prompt_matches_kthena_form() -> None:
    prev = xxhash.xxh64_intdigest(b"m")
    expected = []
    data = b"abcdefgh" * 3
    for start in range(0, len(data), 8):
        prev = xxhash.xxh64_intdigest(f"{prev}".encode() + data[start : start + 8])
        expected.append(prev)
    assert hash_prompt("m", "abcdefgh" * 3, 8, 128) == expected
    assert hash_prompt("m", "", 8, 128) == []
    assert len(hash_prompt("m", "x" * 100, 8, 4)) == 4  # maxBlocksToMatch caps
    assert len(hash_prompt("m", "x" * 17, 8, 128)) == 3  # last block may be short


def test_prefix_cache_scores_match_ratio_and_forgets_a_removed_endpoint() -> None:
    plugin = PrefixCache({"blockSizeToHash": 4, "maxHashCacheSize": 100})
    a, b = ep("a"), ep("b")
    ctx = SchedulingContext(model="m", upstream_model="m", prompt="aaaabbbbcccc")
    assert plugin.score(ctx, [a, b]) == [0, 0]
    plugin.on_served(ctx, [a])
    assert plugin.score(SchedulingContext("m", "m", "aaaabbbbcccc"), [a, b]) == [100, 0]
    assert plugin.score(SchedulingContext("m", "m", "aaaabbbbdddd"), [a, b]) == [66, 0]
    assert plugin.score(SchedulingContext("other", "m", "aaaabbbbcccc"), [a, b]) == [0, 0]  # keyed by model
    plugin.forget(a)
    assert plugin.score(SchedulingContext("m", "m", "aaaabbbbcccc"), [a, b]) == [0, 0]
    assert len(plugin.store) == 0


def test_prefix_cache_learns_a_prompt_when_it_is_sent_not_when_it_is_answered() -> None:
    plugin = PrefixCache({"blockSizeToHash": 4})
    sched = Scheduler([], [(plugin, 1.0)], rng=random.Random(1))
    a, b = ep("a"), ep("b")
    first = SchedulingContext("m", "m", "aaaabbbbcccc")
    sent_to = sched.rank(first, [a, b])[0]
    sched.dispatching(first, sent_to)
    # the prefix's next request, while the first is still being answered, follows it
    follow_up = SchedulingContext("m", "m", "aaaabbbbcccc")
    assert plugin.score(follow_up, [sent_to, a if sent_to is b else b]) == [100, 0]
    sched.served(first, [sent_to])  # the answer adds nothing: one entry per hash
    assert len(plugin.store) == 3


def test_prefix_cache_moves_a_prompt_to_the_endpoint_a_retry_reached() -> None:
    plugin = PrefixCache({"blockSizeToHash": 4})
    a, b = ep("a"), ep("b")
    ctx = SchedulingContext("m", "m", "aaaabbbbcccc")
    plugin.on_dispatch(ctx, a)
    plugin.on_served(ctx, [b])  # a failed, b answered
    assert plugin.score(SchedulingContext("m", "m", "aaaabbbbcccc"), [a, b]) == [0, 100]
    assert len(plugin.store) == 3
    pd = SchedulingContext("m", "m", "aaaabbbb")  # a PD pair: both endpoints learn on the answer
    plugin.on_served(pd, [a, b])
    assert plugin.score(SchedulingContext("m", "m", "aaaabbbb"), [a, b]) == [100, 100]


def test_prefix_cache_lru_evicts_oldest() -> None:
    plugin = PrefixCache({"blockSizeToHash": 4, "maxHashCacheSize": 2})
    a = ep("a")
    plugin.on_served(SchedulingContext("m", "m", "aaaabbbbcccc"), [a])  # 3 blocks, capacity 2
    assert len(plugin.store) == 2
    assert plugin.score(SchedulingContext("m", "m", "aaaa"), [a]) == [0]  # first block evicted


def test_framework_filters_then_scores_and_keeps_top_five() -> None:
    sched = Scheduler([LeastRequest()], [(LeastRequest(), 1.0), (GPUUsage(), 2.0)], rng=random.Random(3))
    endpoints = [ep(f"p{i}", kv_cache_usage=i / 10) for i in range(8)] + [ep("busy", waiting=50)]
    ranked = sched.rank(CTX, endpoints)
    assert [e.name for e in ranked] == ["p0", "p1", "p2", "p3", "p4"]


def test_framework_all_filtered_names_the_plugin() -> None:
    sched = Scheduler([LeastRequest()], [])
    with pytest.raises(SchedulingError, match='filtered out by "least-request"'):
        sched.rank(CTX, [ep("a", waiting=20)])


def test_ties_are_broken_at_random() -> None:
    sched = Scheduler([], [(GPUUsage(), 1.0)], rng=random.Random(5))
    firsts = Counter(sched.rank(CTX, [ep("a"), ep("b"), ep("c")])[0].name for _ in range(300))
    assert set(firsts) == {"a", "b", "c"}


def test_sampling_scores_a_bounded_candidate_set() -> None:
    seen: list[int] = []

    class Counting(GPUUsage):
        def score(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> list[float]:
            seen.append(len(endpoints))
            return super().score(ctx, endpoints)

    endpoints = [ep(f"p{i}") for i in range(1000)]
    sched = Scheduler([LeastRequest()], [(Counting(), 1.0)], rng=random.Random(1), sample_size=8)
    picks = Counter(sched.rank(CTX, endpoints)[0].name for _ in range(400))
    assert seen == [8] * 400
    assert len(picks) > 100  # spread over the fleet, not stuck on a few
    small = Scheduler([], [(Counting(), 1.0)], sample_size=8)
    seen.clear()
    small.rank(CTX, endpoints[:8])
    assert seen == [8]  # at or under k: every endpoint is scored, as without sampling


def test_sampling_falls_back_to_all_endpoints_when_the_sample_is_filtered_out() -> None:
    endpoints = [ep(f"busy{i}", waiting=50) for i in range(99)] + [ep("free")]
    sched = Scheduler([LeastRequest()], [(GPUUsage(), 1.0)], rng=random.Random(2), sample_size=4)
    assert all(sched.rank(CTX, endpoints)[0].name == "free" for _ in range(50))
    with pytest.raises(SchedulingError, match='filtered out by "least-request"'):
        sched.rank(CTX, endpoints[:99])


def test_sampling_keeps_prefix_cache_matches_as_candidates() -> None:
    prefix = PrefixCache({"blockSizeToHash": 4})
    endpoints = [ep(f"p{i}") for i in range(500)]
    holder = endpoints[317]
    ctx = SchedulingContext("m", "m", "aaaabbbbcccc")
    prefix.on_served(ctx, [holder])
    sched = Scheduler([], [(prefix, 1.0)], rng=random.Random(4), sample_size=4)
    members = {e.key: e for e in endpoints}
    for _ in range(50):
        again = SchedulingContext("m", "m", "aaaabbbbcccc")
        assert sched.rank(again, endpoints, members=members)[0] is holder
        assert sched.rank(again, endpoints)[0] is holder  # without a members map too
    other = {e.key: e for e in endpoints[:100]}  # the holder left this server: never nominated
    assert prefix.nominate(SchedulingContext("m", "m", "aaaabbbbcccc"), other) == []


def test_sampled_ties_are_broken_at_random_nominees_included() -> None:
    prefix = PrefixCache({"blockSizeToHash": 4})
    endpoints = [ep(f"p{i}") for i in range(40)]
    ctx = SchedulingContext("m", "m", "aaaabbbb")
    prefix.on_served(ctx, endpoints[:2])  # two nominees, equal matches
    sched = Scheduler([], [(prefix, 1.0)], rng=random.Random(5), sample_size=4)
    firsts = Counter(
        sched.rank(SchedulingContext("m", "m", "aaaabbbb"), endpoints)[0].name for _ in range(200)
    )
    assert set(firsts) == {"p0", "p1"}
    assert min(firsts.values()) > 50
    plain = Scheduler([], [(GPUUsage(), 1.0)], rng=random.Random(6), sample_size=4)
    assert len(Counter(plain.rank(CTX, endpoints)[0].name for _ in range(400))) > 30


def test_prefix_nominees_of_one_rank_do_not_score_the_next() -> None:
    """PD ranks decode then prefill endpoints with one context: each is scored on its own set."""
    prefix = PrefixCache({"blockSizeToHash": 4})
    decode = [ep(f"d{i}") for i in range(40)]
    prefill = [ep("pa"), ep("pb")]
    ctx = SchedulingContext("m", "m", "aaaabbbb")
    prefix.on_served(ctx, [decode[7], prefill[1]])
    sched = Scheduler([], [(prefix, 1.0)], rng=random.Random(7), sample_size=4)
    again = SchedulingContext("m", "m", "aaaabbbb")
    assert sched.rank(again, decode)[0] is decode[7]
    assert sched.rank(again, prefill, top=1)[0] is prefill[1]


def test_pd_pairs_decode_with_same_group_prefill() -> None:
    d0, d1, p0, p1 = ep("d0"), ep("d1", waiting=20), ep("p0"), ep("p1")
    sets = PDSets(
        decode=[d0, d1], prefill_by_group={"g0": [p0], "g1": [p1]}, group_of={"d0": "g0", "d1": "g1"}
    )
    sets.group_of = {"default/d0": "g0", "default/d1": "g1", "default/p0": "g0", "default/p1": "g1"}
    sched = Scheduler([LeastRequest()], [(LeastRequest(), 1.0)])
    pairs = sched.rank_pd(CTX, sets)
    assert [(p.decode.name, p.prefill.name) for p in pairs] == [("d0", "p0")]  # d1 filtered (waiting 20)


def test_pd_errors() -> None:
    sched = Scheduler([], [])
    with pytest.raises(SchedulingError, match="no decode"):
        sched.rank_pd(CTX, PDSets())
    lonely = PDSets(decode=[ep("d")], group_of={"default/d": "g"})
    with pytest.raises(SchedulingError, match="no valid prefill-decode"):
        sched.rank_pd(CTX, lonely)
    only_decode_overloaded = PDSets(decode=[ep("d", waiting=20)], prefill_by_group={"g": [ep("p")]})
    with pytest.raises(SchedulingError):
        Scheduler([LeastRequest()], []).rank_pd(CTX, only_decode_overloaded)


def test_config_parsing() -> None:
    config = parse_config(
        """
scheduler:
  pluginConfig:
  - name: least-request
    args: {maxWaitingRequests: 3}
  plugins:
    Filter: {enabled: [least-request, lora-affinity], disabled: [lora-affinity]}
    Score:
      enabled: [{name: least-request, weight: 2}, {name: gpu-usage, weight: -1}, {name: kvcache-aware}, nope]
"""
    )
    assert config.filters == ["least-request"]
    assert config.scorers == [
        ("least-request", 2.0),
        ("gpu-usage", 0.0),
        ("kvcache-aware", 1.0),
        ("nope", 1.0),
    ]
    sched = build_scheduler(config)
    assert [p.name for p in sched.filters] == ["least-request"]
    assert [(p.name, w) for p, w in sched.scorers] == [
        ("least-request", 2.0),
        ("gpu-usage", 0.0),
        ("kvcache-aware", 1.0),
    ]
    assert [p.name for p in sched.preparers] == ["kvcache-aware"]  # type: ignore[attr-defined]
    assert sched.filters[0] is sched.scorers[0][0]  # one instance per plugin name
    assert sched.filters[0].max_waiting == 3  # type: ignore[attr-defined]


def test_config_random_removed_when_combined_and_defaults() -> None:
    config = parse_config("scheduler: {plugins: {Score: {enabled: [{name: random}, {name: gpu-usage}]}}}")
    assert config.scorers == [("gpu-usage", 1.0)]
    assert parse_config("scheduler: {plugins: {Score: {enabled: [random]}}}").scorers == [("random", 1.0)]
    default = build_scheduler(parse_config(DEFAULT_YAML))
    assert [p.name for p, _ in default.scorers] == [
        "least-request",
        "gpu-usage",
        "least-latency",
        "prefix-cache",
    ]
    assert len(default.post_hooks) == 1
    assert parse_config("scheduler: {}").scorers == []
    assert parse_config("scheduler: {}").sample_size == 16
    assert build_scheduler(parse_config("scheduler: {sampleSize: 0}")).sample_size == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scheduler: {pluginConfig: [{name: least-latency, args: {TTFTTPOTWeightFactor: 2}}]}", "within"),
        ("scheduler: {plugins: {Filter: {enabled: [[1]]}}}", "plugin entries"),
        ("scheduler: [", "not valid YAML"),
        ("scheduler: {plugins: {Score: {enabled: [{name: x, weight: heavy}]}}}", "not a number"),
        ("scheduler: {sampleSize: -1}", "sampleSize"),
        ("scheduler: {sampleSize: many}", "sampleSize"),
    ],
)
def test_config_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_config(text)
