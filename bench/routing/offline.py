"""The routing benchmark's engines at Kthena's full scale, in virtual time (no processes, no router).

    uv run python bench/routing/offline.py [--profile deepseek-r1-distill-qwen-7b-a100] [--groups 256]

``run.py`` measures the real path (router process, sidecars, NATS, HTTP streaming) and so has to
scale the workload down to fit 2 cores. This script answers the question the scale-down cannot:
what does the *same simulator* (``ferry_mock_engine.simulator.Simulator``: the same scheduler,
prefix-cached block pool and step-time profile each engine process runs) give on Kthena's exact
workload — 256 groups x 32 requests, a 4,096-token system prompt, 800 req/s, at most 300 in flight,
max-num-batched-tokens 65,536, blocks of 128, each engine's whole KV pool? The engines are stepped
in virtual time by one event loop, so a run takes a few minutes of one core whatever the load.

The router is modelled, not run: ``random`` picks uniformly; ``least-request`` and ``kvcache-aware`` use
Kthena's formulas (least-request: ``inflight + 100*max(inflight - running, 0)``; kvcache-aware:
``int(100*k/n)`` for the first k of n <= 128 blocks held) over the engines' exact state — an index with
no event lag. Like the router's plugin, kvcache-aware also counts the blocks of the prompts it sent to an
engine in the last ``--pending-ttl`` seconds as held there (``pendingTTLSeconds``, 10 by default); the
set ``LeastRequest+KVCacheAware/events-only`` leaves that out (Kthena's plugin, ``pendingTTLSeconds:
0``). Like ``run.py``'s router configuration, which enables score plugins only, no endpoint is filtered
out; ``--max-waiting N`` adds least-request's filter (Kthena's Helm default: endpoints with ``N`` = 10 or
more waiting requests are left out). ``LeastLatency`` scores Kthena's least-latency from each engine's
TTFT and TPOT means over the last reading interval that had samples (first tokens and finished
requests, as vLLM's histograms gain them) and from what the router measures on the streams it relays:
it runs the router's own plugin and stream timing (``ferry_router.scheduler.least_latency``,
``ferry_router.state.observed_latency``) on simulated time. ``LeastLatency/histograms`` gives it the
histograms alone (Ferry before 2026-12-03), ``LeastLatency/latest`` projects them from the latest
reading's load (Ferry before that), ``LeastLatency/raw`` reads them as Kthena does. ``GPU usage``
runs the router's gpu-usage plugin over the engines' KV-cache usage as last read (the gauge projected
with the queue and the requests sent since), ``GPU usage/raw`` scores the reading as Kthena does.
``LeastRequest+PrefixCache`` runs the router's prefix-cache plugin (its byte-block hashes of the
prompt's text, here its token ids written out), learning a prompt's engine when the request is sent,
as the router does; ``LeastRequest+PrefixCache/on-answer`` learns it once the engine has answered, as
Kthena's post-schedule hook does. ``--affinity-weight`` weighs prefix-cache and kvcache-aware against
least-request's 1 (Kthena's tables and ``run.py``: 1). ``LeastRequest+KVCacheAware/filter`` also runs the
router's affinity filter (``ferry_router.scheduler.kvcache_aware.affinity_keep``) over the modelled index,
the waiting gauges as read and the blocks each engine caches or was sent. ``Partition`` is no router's
policy but a bound: it knows the workload's groups and deals each group's system prompt to one engine,
round-robin in order of first arrival, so every prefix is prefilled once and the engines get equal
shares of the groups — what perfect affinity gives. Prints the same columns as ``run.py``.
"""

from __future__ import annotations

import argparse
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ferry_mock_engine.kvcache import BlockPool, prompt_block_hashes
from ferry_mock_engine.profiles import profile_named
from ferry_mock_engine.simulator import SimRequest, Simulator
from ferry_router.scheduler.framework import SchedulingContext
from ferry_router.scheduler.gpu_usage import GPUUsage
from ferry_router.scheduler.kvcache_aware import affinity_keep
from ferry_router.scheduler.least_latency import LeastLatency, scaled
from ferry_router.scheduler.least_request import FULL_KV_USAGE
from ferry_router.scheduler.prefix_cache import PrefixCache
from ferry_router.state import observed_latency
from ferry_router.state.observed_latency import StreamTiming
from ferry_router.state.resources import Pod
from ferry_router.state.table import Endpoint

MAX_BLOCKS = 128  # kvcache-aware's maxBlocksToMatch
CONTEXT = SchedulingContext(model="m", upstream_model="m", prompt="")


@dataclass
class Fleet:
    engines: list[Simulator]
    rng: random.Random
    max_waiting: int = 0  # least-request's filter (maxWaitingRequests); 0: not enabled
    pending_ttl: float = 0.0
    now: float = 0.0
    pending: list[dict[int, float]] = field(default_factory=list)  # per engine: block hash -> expiry
    reading_interval: float = 0.0  # least-request reads the engines' gauges this often; 0: exact state
    raw_gauges: bool = False  # read them as Kthena does, not projected to now as Ferry's router does
    # running, waiting, in-flight count and KV-cache usage at the last reading, per engine
    readings: list[tuple[int, int, int, float]] = field(default_factory=list)
    next_reading: float = 0.0
    # least-latency: per engine, the TTFT and TPOT samples since the last reading, and the router's
    # endpoint (the readings in its metrics, its own stream timings in its latency)
    samples: list[tuple[list[float], list[float]]] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    # prefix-cache: the router's own plugin and its hash index of the prompts sent to each engine
    prefix: PrefixCache = field(default_factory=PrefixCache)
    affinity_weight: float = 1.0  # prefix-cache's or kvcache-aware's weight (least-request's is 1)
    affinity_filter: bool = False  # kvcache-aware enabled as a filter too (the router's affinity_keep)
    # ``Partition``: each system prompt's engine, dealt round-robin as the prompts first arrive
    partition: dict[int, int] = field(default_factory=dict)

    @property
    def inflight(self) -> list[int]:
        """The requests sent to each engine and not finished (the router's in-flight counts)."""
        return [e.inflight for e in self.endpoints]

    def read(self, now: float) -> None:
        """Take the engines' gauges when a reading is due (the router's scrape, in simulated time)."""
        if self.reading_interval > 0 and now >= self.next_reading:
            engines = zip(self.engines, self.inflight, strict=True)
            self.readings = [(len(e.running), len(e.waiting), n, e.pool.usage) for e, n in engines]
            self.next_reading = now + self.reading_interval
            latency = zip(self.readings, self.samples, self.endpoints, strict=True)
            for (running, waiting, inflight, usage), (ttfts, tpots), endpoint in latency:
                m = endpoint.metrics
                m.running, m.waiting, m.inflight_at_sample = running, waiting, inflight
                m.kv_cache_usage = usage
                if ttfts:  # a new interval mean, measured at this reading's load
                    m.ttft, m.ttft_load = sum(ttfts) / len(ttfts), running + waiting
                if tpots:
                    m.tpot, m.tpot_load = sum(tpots) / len(tpots), running + waiting
                ttfts.clear()
                tpots.clear()

    def least_latency(self, i: int, variant: str) -> tuple[float, float]:
        """Engine ``i``'s (TTFT, TPOT) as Kthena scores them (``raw``: as read) or as Ferry's router
        did before the histograms were projected from their own load (``latest``: from the latest
        reading's)."""
        m = self.endpoints[i].metrics
        f, p = m.ttft, m.tpot
        if variant == "latest":
            running, waiting, inflight_then, _ = self.readings[i] if self.readings else (0, 0, 0, 0.0)
            now = max(running + waiting + self.inflight[i] - inflight_then, 1)
            f *= now / max(running + waiting, 1)
            p *= now / max(running + waiting, 1)
        return (f, p) if f > 0 and p > 0 else (0.0, 0.0)

    def load(self, i: int) -> tuple[float, float]:
        """Engine ``i``'s (running, waiting) as least-request sees them now."""
        if self.reading_interval <= 0:
            return len(self.engines[i].running), len(self.engines[i].waiting)
        running, waiting, inflight_then, usage = self.readings[i] if self.readings else (0, 0, 0, 0.0)
        if self.raw_gauges or (waiting > 0 and usage >= FULL_KV_USAGE):
            return running, waiting
        return running + waiting + self.inflight[i] - inflight_then, 0  # ferry_router's least-request

    def pick(self, policy: str, prompt: list[int], context: SchedulingContext = CONTEXT) -> int:
        if policy == "Random":
            return self.rng.randrange(len(self.engines))
        if policy == "Partition":  # knows the workload's groups: the bound on what affinity can give
            return self.partition.setdefault(prompt[0], len(self.partition) % len(self.engines))
        if policy.startswith("LeastLatency"):
            variant = policy.partition("/")[2]
            return self.pick_least_latency(variant)
        if policy.startswith("GPU usage"):
            return self.pick_gpu_usage(raw=policy.endswith("/raw"))
        candidates = list(range(len(self.engines)))
        loads = [self.load(i) for i in candidates]
        if self.max_waiting > 0:
            candidates = [i for i in candidates if loads[i][1] < self.max_waiting] or candidates
        hashes = prompt_block_hashes(prompt, self.engines[0].pool.block_size)[:MAX_BLOCKS]
        kv_aware = policy.endswith("KVCacheAware") and bool(hashes)
        held = [self.held(i, hashes) if kv_aware else 0 for i in range(len(self.engines))]
        if kv_aware and self.affinity_filter:  # the router's filter, over the waiting gauges as read
            if self.reading_interval <= 0:
                waiting = [len(self.engines[i].waiting) for i in candidates]
            else:
                waiting = [self.readings[i][1] if self.readings else 0 for i in candidates]
            inflight = [self.inflight[i] for i in candidates]
            footprint = [self.footprint(i) for i in candidates]
            kept = affinity_keep([held[i] for i in candidates], len(hashes), waiting, inflight, footprint)
            candidates = [candidates[k] for k in kept]
        bases = {i: self.inflight[i] + 100 * max(self.inflight[i] - loads[i][0], 0) for i in candidates}
        top = max(bases.values())
        learned = [0.0] * len(self.endpoints)
        if policy.endswith("PrefixCache"):
            learned = self.prefix.score(context, self.endpoints)
        best, best_score = candidates[0], -1.0
        for i in self.rng.sample(candidates, len(candidates)):  # random tie-break
            score = 100.0 if top <= 0 else float(int((top - bases[i]) / top * 100))
            score += self.affinity_weight * learned[i]
            if kv_aware:
                score += self.affinity_weight * int(100 * held[i] / len(hashes))
            if score > best_score:
                best, best_score = i, score
        if self.pending_ttl > 0 and policy.endswith("KVCacheAware"):
            self.pending[best].update(dict.fromkeys(hashes, self.now + self.pending_ttl))
        return best

    def held(self, i: int, hashes: list[int]) -> int:
        """Leading blocks of ``hashes`` engine ``i`` holds, or was sent within the pending TTL."""
        held = len(self.engines[i].pool.cached_prefix(hashes))
        expected = self.pending[i]
        while held < len(hashes) and expected.get(hashes[held], -1.0) > self.now:
            held += 1
        return held

    def footprint(self, i: int) -> int:
        """Blocks engine ``i`` caches or was sent within the pending TTL (the router's index)."""
        cached, expected = self.engines[i].pool.cached, self.pending[i]
        for h in [h for h, until in expected.items() if until <= self.now]:
            del expected[h]
        return len(cached) + sum(1 for h in expected if h not in cached)

    def best(self, scores: list[float]) -> int:
        """The engine with the top score, ties broken at random (as the router does)."""
        top = max(scores)
        return self.rng.choice([i for i, score in enumerate(scores) if score == top])

    def pick_gpu_usage(self, raw: bool) -> int:
        """The router's plugin over the router's endpoints; ``raw``: Kthena's, the gauge as read."""
        if raw:
            scores = [float(int((1.0 - e.metrics.kv_cache_usage) * 100)) for e in self.endpoints]
        else:
            scores = GPUUsage().score(CONTEXT, self.endpoints)
        return self.best(scores)

    def pick_least_latency(self, variant: str) -> int:
        """The router's plugin over the router's endpoints; ``raw`` and ``latest``: Kthena's scores
        (each measure scaled min -> 100, max -> 0, mixed 0.5/0.5, unmeasured 50) over those figures."""
        if variant in ("", "histograms"):
            scores = LeastLatency().score(CONTEXT, self.endpoints)
        else:
            measures = [self.least_latency(i, variant) for i in range(len(self.engines))]
            known = [i for i, (f, _) in enumerate(measures) if f > 0]
            scores = [50.0] * len(measures)
            by_ttft = scaled([measures[i][0] for i in known]) if known else []
            by_tpot = scaled([measures[i][1] for i in known]) if known else []
            for i, score_f, score_p in zip(known, by_ttft, by_tpot, strict=True):
                scores[i] = float(int(0.5 * score_f + 0.5 * score_p))
        return self.best(scores)


@dataclass
class Result:
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    end: float = 0.0
    hits: int = 0
    queries: int = 0
    preemptions: int = 0


def workload(args: argparse.Namespace) -> list[list[int]]:
    """Token ids of sglang's generated-shared-prefix dataset, shuffled (distinct ids per text)."""
    rng = random.Random(f"{args.groups}-{args.per_group}" + (f"-{args.seed}" if args.seed else ""))
    prompts: list[list[int]] = []
    next_id = 1000
    for _ in range(args.groups):
        system = list(range(next_id, next_id + args.system))
        next_id += args.system
        for _ in range(args.per_group):
            prompts.append(system + list(range(next_id, next_id + args.question)))
            next_id += args.question
    rng.shuffle(prompts)
    return prompts


def simulate(policy: str, prompts: list[list[int]], args: argparse.Namespace) -> Result:
    now = 0.0

    def clock() -> float:
        return now

    profile = profile_named(args.profile)
    engines = [
        Simulator(
            profile,
            BlockPool(pool_blocks(args), args.block_size),
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            clock=clock,
        )
        for _ in range(args.engines)
    ]
    ttl = 0.0 if policy.endswith("/events-only") else args.pending_ttl
    filtered = policy.endswith("/filter")
    policy = policy.removesuffix("/filter")
    fleet = Fleet(
        engines,
        random.Random(7 + args.seed),
        args.max_waiting,
        ttl,
        0.0,
        [{} for _ in engines],
        args.reading_interval,
        args.raw_gauges,
        samples=[([], []) for _ in engines],
        endpoints=[Endpoint(Pod("bench", f"e{i}", "", {}, True), 0, "vllm") for i in range(len(engines))],
        affinity_weight=args.affinity_weight,
        affinity_filter=filtered,
    )
    observed_latency.clock = lambda: 1e6 + now  # the router's stream timings on simulated time
    timed = policy == "LeastLatency"  # the router's own measures (not /histograms, /latest, /raw)
    timings: dict[str, StreamTiming] = {}
    # prefix-cache learns a prompt's engine when the request is sent (the router) or, as Kthena's,
    # once the engine has answered it (``/on-answer``)
    on_answer = policy.endswith("/on-answer")
    policy = policy.removesuffix("/on-answer")
    learns = policy.endswith("PrefixCache")
    contexts: dict[str, SchedulingContext] = {}
    if policy.startswith(("LeastLatency", "GPU usage")) and fleet.reading_interval <= 0:
        fleet.reading_interval = 1e-9  # they read gauges and interval means: a reading at every event
    stepping = [False] * len(engines)
    owner: dict[int, list[SimRequest]] = {i: [] for i in range(len(engines))}
    events: list[tuple[float, int, int]] = []  # (time, order, engine or -1 for an arrival)
    order = 0
    sent, free = 0, args.concurrency
    result = Result()
    first_tokens: set[str] = set()  # requests whose TTFT was sampled

    def push(at: float, engine: int) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (at, order, engine))

    def step(i: int) -> None:
        if not stepping[i] and (duration := engines[i].step_plan()) is not None:
            stepping[i] = True
            push(now + duration, i)

    def arrive() -> None:
        nonlocal sent, free
        while sent < len(prompts) and free > 0 and sent / args.rate <= now + 1e-12:
            prompt = prompts[sent]
            fleet.now = now
            context = CONTEXT
            if learns:  # the router hashes the prompt's text: its token ids written out here
                context = SchedulingContext(model="m", upstream_model="m", prompt=" ".join(map(str, prompt)))
            i = fleet.pick(policy.removesuffix("/events-only"), prompt, context)
            request = engines[i].request(str(sent), prompt, args.output)
            if on_answer:
                contexts[request.id] = context
            elif learns:
                fleet.prefix.on_dispatch(context, fleet.endpoints[i])
            engines[i].submit(request)
            owner[i].append(request)
            fleet.endpoints[i].inflight += 1
            if timed:
                timings[request.id] = StreamTiming(fleet.endpoints[i])
            sent, free = sent + 1, free - 1
            step(i)
        if sent < len(prompts) and free > 0:
            push(sent / args.rate, -1)

    push(0.0, -1)
    while events:
        now, _, i = heapq.heappop(events)
        if i >= 0:
            engines[i].step_finish()
            engines[i].pool.take_events()
            stepping[i] = False
            ttfts, tpots = fleet.samples[i]  # what the engine's histograms gain in this step
            for request in owner[i]:
                if request.first_token_at is not None and request.id not in first_tokens:
                    first_tokens.add(request.id)
                    ttfts.append(request.first_token_at - request.arrival)
                    if timed:
                        timings[request.id].first_chunk()
            for request in [r for r in owner[i] if r.finished]:
                owner[i].remove(request)
                if timed:
                    timing = timings.pop(request.id)
                    timing.tokens = args.output
                    timing.ended()
                fleet.endpoints[i].inflight -= 1
                if on_answer:  # Kthena's post-schedule hook: after the response, on success
                    fleet.prefix.on_served(contexts.pop(request.id), [fleet.endpoints[i]])
                free += 1
                tpots.append((now - (request.first_token_at or now)) / max(args.output - 1, 1))
                result.ttft.append((request.first_token_at or now) - request.arrival)
                result.e2e.append(now - request.arrival)
                result.end = now
            step(i)
        fleet.read(now)
        arrive()
    for engine in engines:
        result.hits += engine.stats.prefix_hits
        result.queries += engine.stats.prefix_queries
        result.preemptions += engine.stats.preemptions
    return result


def pool_blocks(args: argparse.Namespace) -> int:
    """Blocks of ``--block-size`` per engine: the same bytes as ``--kv-blocks`` blocks of 16 tokens."""
    blocks = int(args.kv_blocks) or profile_named(args.profile).kv_blocks(16, args.max_num_batched_tokens)
    return blocks * 16 // int(args.block_size)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report(results: dict[str, Result], args: argparse.Namespace) -> None:
    print(
        f"{args.engines} engines ({args.profile}, {pool_blocks(args)} KV blocks of {args.block_size} each, "
        f"max-num-batched-tokens {args.max_num_batched_tokens}); {args.groups} groups x "
        f"{args.per_group}, system prompt {args.system}, question {args.question}, output {args.output}, "
        f"rate {args.rate:g}/s, max concurrency {args.concurrency} (simulated seconds)"
    )
    width = max(26, *map(len, results))
    header = (
        f"{'plugin set':<{width}} | {'req/s':>6} {'x Random':>8} | "
        f"{'TTFT p50':>8} {'p99':>7} {'vs Random':>9} | {'e2e p50':>7} {'p99':>7} {'vs Random':>9} | "
        f"{'cache hit':>9} | {'preempted':>9}"
    )
    print(header)
    print("-" * len(header))
    base = results.get("Random")
    rate: Callable[[Result], float] = lambda r: len(r.e2e) / r.end  # noqa: E731
    for label, r in results.items():
        ratio = rate(r) / rate(base) if base else float("nan")
        ttft = (percentile(r.ttft, 50) / percentile(base.ttft, 50) - 1) * 100 if base else float("nan")
        e2e = (percentile(r.e2e, 50) / percentile(base.e2e, 50) - 1) * 100 if base else float("nan")
        print(
            f"{label:<{width}} | {rate(r):6.2f} {ratio:7.2f}x | {percentile(r.ttft, 50):7.2f}s "
            f"{percentile(r.ttft, 99):6.2f}s {ttft:+8.1f}% | {percentile(r.e2e, 50):6.2f}s "
            f"{percentile(r.e2e, 99):6.2f}s {e2e:+8.1f}% | {r.hits / r.queries * 100:8.1f}% | "
            f"{r.preemptions:>9}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="deepseek-r1-distill-qwen-7b-a100")
    parser.add_argument("--groups", type=int, default=256)
    parser.add_argument("--per-group", type=int, default=32)
    parser.add_argument("--system", type=int, default=4096)
    parser.add_argument("--question", type=int, default=128)
    parser.add_argument("--output", type=int, default=256)
    parser.add_argument("--rate", type=float, default=800.0)
    parser.add_argument("--concurrency", type=int, default=300)
    parser.add_argument("--engines", type=int, default=3)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-num-batched-tokens", type=int, default=65536)
    parser.add_argument(
        "--kv-blocks",
        type=int,
        default=0,
        help="per engine, in blocks of 16 tokens (default: the profile's pool)",
    )
    parser.add_argument(
        "--block-size", type=int, default=128, help="the engines' KV block size (Kthena: 128)"
    )
    parser.add_argument(
        "--pending-ttl", type=float, default=10.0, help="kvcache-aware's pendingTTLSeconds (simulated s)"
    )
    parser.add_argument(
        "--max-waiting",
        type=int,
        default=0,
        help="least-request's filter: leave out endpoints with this many waiting (0: no filter, as run.py)",
    )
    parser.add_argument(
        "--reading-interval",
        type=float,
        default=0.0,
        help="least-request reads the engines' running/waiting gauges every this many simulated seconds, "
        "projected to now as the router does (0: their exact state; run.py's router scrapes every wall "
        "second, i.e. 1/time-scale simulated)",
    )
    parser.add_argument(
        "--raw-gauges", action="store_true", help="with --reading-interval: read them raw, as Kthena does"
    )
    parser.add_argument(
        "--affinity-weight",
        type=float,
        default=1.0,
        help="prefix-cache's and kvcache-aware's weight beside least-request's 1 (run.py: 1, as Kthena)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="another order of the same requests and other tie-breaks (0: the published tables' run)",
    )
    parser.add_argument(
        "--sets",
        default="Random,LeastRequest,LeastRequest+PrefixCache,LeastRequest+KVCacheAware/events-only,"
        "LeastRequest+KVCacheAware",
    )
    args = parser.parse_args()
    prompts = workload(args)
    results: dict[str, Result] = {}
    for label in args.sets.split(","):
        results[label] = simulate(label, prompts, args)
    report(results, args)


if __name__ == "__main__":
    main()
