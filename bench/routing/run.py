"""Routing benchmark: which scheduler plugins raise throughput and cut TTFT, on Kthena's workload.

    uv run python bench/routing/run.py [--groups 64] [--per-group 16] [--repeats long:1,short:3]

Kthena's router benchmark, scaled down for 2 cores (bench/routing/README.md says how and why):
a generated shared-prefix workload (``groups`` x ``per-group`` chat requests; each group shares a
system prompt of 4,096 tokens (long, 128-token questions) or 256 (short, 2,048-token questions, as
Kthena's committed job); 256 output tokens; shuffled; sent at a fixed rate with a maximum
concurrency) against 3 simulated engines (the ``deepseek-r1-distill-qwen-7b-a100`` profile, blocks
of 128 as Kthena's, prefix caching, KV events) through the real router, once per plugin set:
Random, LeastRequest, GPU usage, LeastLatency, LeastRequest+PrefixCache, LeastRequest+KVCacheAware.
Ferry's runtime sidecars bridge the engines' KV events onto NATS.

Every engine runs ``--time-scale`` times slower than the simulated GPU, so the Python processes'
own CPU time is small next to a simulated second; all figures are in simulated seconds (wall
time ÷ scale; the router's stream idle timeout and ``pendingTTLSeconds`` are scaled too). Between
sets the engines' prefix caches are reset (vLLM's ``/reset_prefix_cache``) and a fresh router is
started. Prints one table per workload (the median run of each set when a
workload is repeated); asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from ferry_local.binaries import find_binaries
from ferry_local.natsd import NatsServer
from ferry_local.processes import ManagedProcess, spawn
from ferry_local.readiness import free_port
from ferry_mock_engine.profiles import profile_named

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.fleet import publish_fleet, wait_http  # the repository's root

MODEL = "deepseek-r1-distill-qwen-7b"
NAMESPACE = "routing-bench"
PROFILE = "deepseek-r1-distill-qwen-7b-a100"  # README: the GPU whose figures match Kthena's
KTHENA_GROUPS = 256
KTHENA_RATE = 800.0
# (system prompt, question) tokens per workload. The long system prompt and the short one are the
# blog's; Kthena's committed job (benchmark/kthena-router/job.yaml: system 256, question 2,048) is
# the short one's question; the long one's is not published and is sglang's default (128) -- a
# 2,048-token question there would cap KV-aware far below Kthena's 32 req/s (README).
SHAPES = {"long": (4096, 128), "short": (256, 2048)}
WORDS = (
    "cache",
    "block",
    "token",
    "prefix",
    "engine",
    "router",
    "decode",
    "prefill",
    "batch",
    "queue",
    "model",
    "layer",
    "tensor",
    "stream",
    "answer",
    "question",
    "system",
    "expert",
    "group",
    "shard",
    "replica",
    "kernel",
    "memory",
    "bandwidth",
    "latency",
)

PLUGIN_SETS: dict[str, list[tuple[str, int]]] = {
    "Random": [("random", 1)],
    "LeastRequest": [("least-request", 1)],
    "GPU usage": [("gpu-usage", 1)],
    "LeastLatency": [("least-latency", 1)],
    "LeastRequest+PrefixCache": [("least-request", 1), ("prefix-cache", 1)],
    "LeastRequest+KVCacheAware": [("least-request", 1), ("kvcache-aware", 1)],
}
EXTRA_SETS: dict[str, list[tuple[str, int]]] = {
    # Ferry's affinity filter (the router README): by name in --sets, not in Kthena's table
    "LeastRequest+KVCacheAware/filter": PLUGIN_SETS["LeastRequest+KVCacheAware"],
}
FILTERS: dict[str, list[str]] = {"LeastRequest+KVCacheAware/filter": ["kvcache-aware"]}
LABEL_WIDTH = max(len(label) for label in [*PLUGIN_SETS, *EXTRA_SETS])
"""The tables' first column fits every set's label."""


def router_yaml(
    scorers: list[tuple[str, int]], block_size: int, scale: float, filters: list[str] | None = None
) -> str:
    """Kthena's plugin arguments; the router's clock is wall time, so its one duration (the pending
    blocks' TTL, 10 s by default) is scaled like the engines."""
    enabled = "\n".join(f"      - {{name: {name}, weight: {weight}}}" for name, weight in scorers)
    if filters:
        enabled += f"\n    Filter:\n      enabled: [{', '.join(filters)}]"
    return f"""scheduler:
  pluginConfig:
  - name: prefix-cache
    args: {{blockSizeToHash: 64, maxBlocksToMatch: 128, maxHashCacheSize: 50000, topKMatches: 5}}
  - name: kvcache-aware
    args: {{blockSizeToHash: {block_size}, maxBlocksToMatch: 128, pendingTTLSeconds: {10 * scale:g}}}
  - name: least-latency
    args: {{TTFTTPOTWeightFactor: 0.5}}
  plugins:
    Score:
      enabled:
{enabled}
"""


# ---------------------------------------------------------------------------------- workload


def text_of(tokens: int, rng: random.Random, head: str) -> str:
    """About ``tokens`` tokens of the engines' tokenizer (4 characters each), starting with ``head``."""
    words = [head]
    length = len(head)
    while length < tokens * 4:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[: tokens * 4]


@dataclass(frozen=True)
class Workload:
    name: str
    system_tokens: int
    question_tokens: int
    output_tokens: int
    requests: list[list[dict[str, str]]]


def generate(name: str, groups: int, per_group: int, system: int, question: int, output: int) -> Workload:
    """sglang ``bench_serving``'s generated-shared-prefix dataset, shuffled."""
    rng = random.Random(f"{name}-{groups}-{per_group}")
    requests = []
    for g in range(groups):
        prompt = text_of(system, rng, f"group{g:04d}")
        for q in range(per_group):
            ask = text_of(question, rng, f"q{g}-{q}")
            requests.append([{"role": "system", "content": prompt}, {"role": "user", "content": ask}])
    rng.shuffle(requests)
    return Workload(name, system, question, output, requests)


# ---------------------------------------------------------------------------------- measurement


@dataclass
class Outcome:
    ok: int = 0
    failed: int = 0
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    wall: float = 0.0
    hits: float = 0.0
    queries: float = 0.0
    engine: EngineSide = field(default_factory=lambda: EngineSide())


@dataclass
class EngineSide:
    """What the engines measured over a set (simulated seconds), summed over the engines: their own
    TTFT (arrival at the engine to first token: queueing and prefill, no router, client or network)
    as cumulative histogram counts per bound, and preemptions. Told apart from the client's TTFT, it
    says whether a slow first token waited in an engine or in the host's own processes."""

    ttft_bounds: list[float] = field(default_factory=list)
    ttft_cumulative: list[float] = field(default_factory=list)
    ttft_sum: float = 0.0
    preemptions: float = 0.0

    def add(self, after: EngineReading, before: EngineReading) -> None:
        if not self.ttft_bounds:
            self.ttft_bounds = [bound for bound, _ in after.ttft_buckets]
            self.ttft_cumulative = [0.0] * len(self.ttft_bounds)
        for i, ((_, a), (_, b)) in enumerate(zip(after.ttft_buckets, before.ttft_buckets, strict=True)):
            self.ttft_cumulative[i] += a - b
        self.ttft_sum += after.ttft_sum - before.ttft_sum
        self.preemptions += after.preemptions - before.preemptions

    def ttft_quantile(self, q: float) -> float:
        """Prometheus' ``histogram_quantile``: linear within the bucket that holds the quantile."""
        if not self.ttft_cumulative or self.ttft_cumulative[-1] <= 0:
            return float("nan")
        rank = q * self.ttft_cumulative[-1]
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in zip(self.ttft_bounds, self.ttft_cumulative, strict=True):
            if count >= rank:
                if math.isinf(bound):
                    return lower_bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(
                    count - lower_count, 1e-9
                )
            lower_bound, lower_count = bound, count
        return lower_bound

    def ttft_mean(self) -> float:
        count = self.ttft_cumulative[-1] if self.ttft_cumulative else 0.0
        return self.ttft_sum / count if count else float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def one_request(
    http: aiohttp.ClientSession, url: str, messages: list[dict[str, str]], output: int, out: Outcome
) -> None:
    body = {"model": MODEL, "messages": messages, "max_tokens": output, "stream": True}
    start = time.monotonic()
    first: float | None = None
    try:
        async with http.post(url, json=body) as resp:
            if resp.status != 200:
                out.failed += 1
                await resp.read()
                return
            async for line in resp.content:
                if line.startswith(b'data: {"error"'):  # the router cut the stream
                    out.failed += 1
                    return
                if first is None and line.startswith(b"data: {") and b'"content"' in line:
                    first = time.monotonic()
    except (aiohttp.ClientError, TimeoutError):
        out.failed += 1
        return
    end = time.monotonic()
    out.ok += 1
    out.ttft.append((first or end) - start)
    out.e2e.append(end - start)


async def drive(url: str, workload: Workload, rate: float, concurrency: int, scale: float) -> Outcome:
    """Send every request at ``rate`` (simulated req/s), at most ``concurrency`` at once."""
    out = Outcome()
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600 * scale)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        start = time.monotonic()

        async def send(i: int, messages: list[dict[str, str]]) -> None:
            async with slots:
                await one_request(http, url, messages, workload.output_tokens, out)

        tasks = []
        for i, messages in enumerate(workload.requests):
            due = start + i / rate * scale
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            await slots.acquire()  # keep the open-loop clock from running ahead of the slots
            slots.release()
            tasks.append(asyncio.create_task(send(i, messages)))
        await asyncio.gather(*tasks)
        out.wall = time.monotonic() - start
    out.ttft = [t / scale for t in out.ttft]
    out.e2e = [t / scale for t in out.e2e]
    return out


@dataclass(frozen=True)
class EngineReading:
    """One engine's counters at one moment."""

    hits: float
    queries: float
    preemptions: float
    ttft_buckets: list[tuple[float, float]]  # (upper bound, cumulative count)
    ttft_sum: float


def scrape(url: str) -> EngineReading:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        return reading_of(response.read().decode())


def reading_of(text: str) -> EngineReading:
    """The counters of one engine's ``/metrics`` text."""

    def counter(name: str) -> float:
        match = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} ([\d.e+]+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    ttft = "vllm:time_to_first_token_seconds"
    buckets = [
        (float(bound), float(count))
        for bound, count in re.findall(
            rf'^{re.escape(ttft)}_bucket\{{[^}}]*le="([^"]+)"[^}}]*\}} ([\d.e+]+)$', text, re.M
        )
    ]
    return EngineReading(
        counter("vllm:prefix_cache_hits_total"),
        counter("vllm:prefix_cache_queries_total"),
        counter("vllm:num_preemptions_total"),
        buckets,
        counter(f"{ttft}_sum"),
    )


# ---------------------------------------------------------------------------------- the stack


def post(url: str) -> int:
    request = urllib.request.Request(url, b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass
class Stack:
    work: Path
    nats_url: str
    hosts: list[str]
    port: int
    block_size: int
    scale: float
    processes: list[ManagedProcess] = field(default_factory=list)

    def engine_urls(self) -> list[str]:
        return [f"http://{host}:{self.port}" for host in self.hosts]

    def start_router(self, label: str, scorers: list[tuple[str, int]]) -> tuple[ManagedProcess, str]:
        config = self.work / f"router-{len(self.processes)}.yaml"
        config.write_text(router_yaml(scorers, self.block_size, self.scale, FILTERS.get(label)))
        port = free_port()
        env = {
            "FERRY_NATS_URL": self.nats_url,
            "FERRY_ROUTER_PORT": str(port),
            "FERRY_ROUTER_METRICS_PORT": str(free_port()),
            "FERRY_ROUTER_DEBUG_PORT": "-1",
            # A stream's longest silence is its wait for the first token: scaled like the engines
            # (the default 120 s cut a slow GPU profile's queued requests at time scale 4).
            "FERRY_ROUTER_IDLE_TIMEOUT": f"{120 * self.scale:g}s",
            "FERRY_ROUTER_CONFIG": str(config),
            "ACCESS_LOG_ENABLED": "false",
            "FERRY_LOG_LEVEL": "WARNING",
        }
        argv = [sys.executable, "-c", "from ferry_router.__main__ import main; main()"]
        router = spawn(process_name(label), argv, self.work / "logs", env)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", "router", router)
        # Ready = the routing table is synced; wait until the model answers.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as response:
                    if MODEL in response.read().decode():
                        break
            except OSError:
                pass
            time.sleep(0.1)
        return router, url


def start_stack(args: argparse.Namespace, work: Path, nats_url: str) -> Stack:
    port = free_port()
    subnet = random.randint(30, 230)
    hosts = [f"127.{subnet}.9.{i + 2}" for i in range(args.engines)]
    stack = Stack(work, nats_url, hosts, port, args.block_size, args.time_scale)
    events = {"enable_kv_cache_events": True, "topic": "kv-events"}
    for i, host in enumerate(stack.hosts):
        zmq_port, replay_port = free_port(), free_port()
        config = json.dumps(
            {**events, "endpoint": f"tcp://*:{zmq_port}", "replay_endpoint": f"tcp://*:{replay_port}"}
        )
        argv = [
            sys.executable, "-m", "ferry_mock_engine", "--host", host, "--port", str(port),
            "--served-model-name", MODEL, "--mock-id", f"engine-{i}", "--sim-profile", args.profile,
            "--time-scale", str(args.time_scale), "--max-num-seqs", str(args.max_num_seqs),
            "--max-num-batched-tokens", str(args.max_num_batched_tokens),
            "--block-size", str(args.block_size), "--kv-cache-size", str(engine_blocks(args)),
            "--kv-events-config", config,
        ]  # fmt: skip
        engine = spawn(f"engine-{i}", argv, work / "logs", {"FERRY_LOG_LEVEL": "WARNING"})
        stack.processes.append(engine)
        sidecar = [
            sys.executable, "-m", "ferry_runtime", "--port", str(free_port()), "--host", "127.0.0.1",
            "--pod", f"engine-{i}.{NAMESPACE}", "--model", MODEL,
            "--kv-events-endpoint", f"tcp://{host}:{zmq_port}", "--kv-events-topic", "kv-events",
            "--kv-events-replay-endpoint", f"tcp://{host}:{replay_port}",
        ]  # fmt: skip
        runtime = spawn(
            f"runtime-{i}", sidecar, work / "logs", {"FERRY_NATS_URL": nats_url, "FERRY_LOG_LEVEL": "WARNING"}
        )
        stack.processes.append(runtime)
        wait_http(f"http://{host}:{port}/health", f"engine {i}", engine)
    asyncio.run(publish_fleet(nats_url, NAMESPACE, MODEL, stack.hosts, port))
    return stack


def engine_blocks(args: argparse.Namespace) -> int:
    """Each engine's pool in blocks of ``--block-size``: the bytes of ``--kv-blocks`` blocks of 16."""
    return int(args.kv_blocks * 16 // args.block_size)


def process_name(label: str) -> str:
    """The router process's name (and log file's) for a plugin set: no ``/``, ``+`` or blanks."""
    return "router-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", label)


def run_set(stack: Stack, label: str, workload: Workload, args: argparse.Namespace) -> Outcome:
    for url in stack.engine_urls():
        deadline = time.monotonic() + 30
        while post(f"{url}/reset_prefix_cache") != 200:  # idle engines only
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not reset its prefix cache")
            time.sleep(0.2)
    router, url = stack.start_router(label, {**PLUGIN_SETS, **EXTRA_SETS}[label])
    try:
        before = [scrape(u) for u in stack.engine_urls()]
        outcome = asyncio.run(
            drive(f"{url}/v1/chat/completions", workload, args.rate, args.concurrency, args.time_scale)
        )
        after = [scrape(u) for u in stack.engine_urls()]
    finally:
        router.stop(timeout=5)
    for a, b in zip(after, before, strict=True):
        outcome.hits += a.hits - b.hits
        outcome.queries += a.queries - b.queries
        outcome.engine.add(a, b)
    return outcome


def rps(o: Outcome, scale: float) -> float:
    return o.ok / (o.wall / scale) if o.wall else 0.0


def median_run(outcomes: list[Outcome], scale: float) -> Outcome:
    """The run with the median throughput (the lower middle one for an even count), whole."""
    return sorted(outcomes, key=lambda o: rps(o, scale))[(len(outcomes) - 1) // 2]


def parse_repeats(text: str) -> dict[str, int]:
    """``long:1,short:3`` -> runs per set for each workload."""
    repeats: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        name, _, count = item.partition(":")
        if not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--repeats: expected <workload>:<count >= 1>, got {item!r}")
        repeats[name] = int(count)
    return repeats


def print_table(workload: Workload, results: dict[str, Outcome], scale: float, repeats: int) -> None:
    base = results.get("Random")
    runs = f", median of {repeats} runs per set" if repeats > 1 else ""
    print(
        f"\n{workload.name}: {len(workload.requests)} requests{runs}, "
        f"system prompt {workload.system_tokens} tokens, "
        f"question {workload.question_tokens}, output {workload.output_tokens} (simulated seconds)"
    )
    header = (
        f"{'plugin set':<{LABEL_WIDTH}} | {'req/s':>6} {'x Random':>8} | "
        f"{'TTFT p50':>8} {'p99':>7} {'vs Random':>9} | "
        f"{'e2e p50':>7} {'p99':>7} {'vs Random':>9} | {'cache hit':>9} | {'failed':>6}"
    )
    print(header)
    print("-" * len(header))
    for label, o in results.items():
        ttft50, e2e50 = percentile(o.ttft, 50), percentile(o.e2e, 50)
        throughput = rps(o, scale)
        ratio = throughput / rps(base, scale) if base and rps(base, scale) else float("nan")
        ttft_delta = (ttft50 / percentile(base.ttft, 50) - 1) * 100 if base else float("nan")
        e2e_delta = (e2e50 / percentile(base.e2e, 50) - 1) * 100 if base else float("nan")
        hit = o.hits / o.queries * 100 if o.queries else 0.0
        print(
            f"{label:<{LABEL_WIDTH}} | {throughput:6.2f} {ratio:7.2f}x | "
            f"{ttft50:7.2f}s {percentile(o.ttft, 99):6.2f}s "
            f"{ttft_delta:+8.1f}% | {e2e50:6.2f}s {percentile(o.e2e, 99):6.2f}s {e2e_delta:+8.1f}% | "
            f"{hit:8.1f}% | {o.failed:>6}"
        )
    print(
        "\nwhere the first token waited: the client's TTFT (router, tokenize, network and the engine) "
        "against the engines' own (queue and prefill; p50 interpolated in the engines' buckets)"
    )
    header = f"{'plugin set':<{LABEL_WIDTH}} | {'client p50':>10} {'mean':>7} | "
    header += f"{'engine p50':>10} {'mean':>7} | {'preempted':>9}"
    print(header)
    print("-" * len(header))
    for label, o in results.items():
        client_mean = sum(o.ttft) / len(o.ttft) if o.ttft else float("nan")
        print(
            f"{label:<{LABEL_WIDTH}} | {percentile(o.ttft, 50):9.2f}s {client_mean:6.2f}s | "
            f"{o.engine.ttft_quantile(0.5):9.2f}s {o.engine.ttft_mean():6.2f}s | {o.engine.preemptions:9.0f}"
        )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=64, help="shared-prefix groups (Kthena: 256)")
    parser.add_argument("--per-group", type=int, default=16, help="requests per group (Kthena: 32)")
    parser.add_argument(
        "--question",
        type=int,
        help="question tokens (default: long 128 as sglang's default, short 2,048 as Kthena's job)",
    )
    parser.add_argument("--output", type=int, default=256, help="output tokens")
    parser.add_argument(
        "--rate", type=float, help="simulated requests/s (default: Kthena's 800 x groups / 256)"
    )
    parser.add_argument("--concurrency", type=int, default=300, help="max in flight (Kthena: 300)")
    parser.add_argument("--engines", type=int, default=3)
    parser.add_argument("--profile", default=PROFILE, help="the simulator's model/GPU profile")
    parser.add_argument("--max-num-seqs", type=int, default=256, help="per engine (Kthena: 256)")
    parser.add_argument(
        "--max-num-batched-tokens", type=int, default=65536, help="per engine (Kthena: 65536)"
    )
    parser.add_argument(
        "--kv-blocks",
        type=int,
        help="KV blocks of 16 tokens per engine (default: the profile's pool x groups / 256, i.e. "
        "the fraction of a real engine's cache that Kthena's 256 groups had)",
    )
    parser.add_argument(
        "--block-size",
        type=int,
        default=128,
        help="the engines' KV block size and blockSizeToHash (Kthena: 128)",
    )
    parser.add_argument("--time-scale", type=float, default=4.0, help="wall seconds per simulated second")
    parser.add_argument("--workloads", default="long,short")
    parser.add_argument(
        "--sets",
        default=",".join(PLUGIN_SETS),
        help=f"Kthena's table by default; also: {', '.join(EXTRA_SETS)} (the affinity filter)",
    )
    parser.add_argument(
        "--repeats", default="long:1,short:1", help="runs per set, per workload; the median run is shown"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    repeats = parse_repeats(args.repeats)
    if args.rate is None:
        args.rate = KTHENA_RATE * args.groups / KTHENA_GROUPS
    if args.kv_blocks is None:
        pool = profile_named(args.profile).kv_blocks(16, args.max_num_batched_tokens)
        args.kv_blocks = round(pool * args.groups / KTHENA_GROUPS)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the processes it started
    work = Path(tempfile.mkdtemp(prefix="ferry-routing-bench-"))
    nats_server = None
    stack: Stack | None = None
    try:
        nats_url = os.environ.get("NATS_URL")
        if not nats_url:
            nats_server = NatsServer(find_binaries().nats_server, work / "nats", work / "logs")
            nats_server.start()
            nats_url = nats_server.url
        stack = start_stack(args, work, nats_url)
        print(
            f"{args.engines} simulated engines ({args.profile}, max-num-seqs {args.max_num_seqs}, "
            f"max-num-batched-tokens {args.max_num_batched_tokens}, {engine_blocks(args)} KV blocks "
            f"of {args.block_size} tokens each), time scale {args.time_scale:g}; "
            f"{args.groups} groups x {args.per_group} requests, rate {args.rate:g}/s, "
            f"max concurrency {args.concurrency}"
        )
        for name in args.workloads.split(","):
            system, question = SHAPES[name]
            question = args.question or question
            workload = generate(name, args.groups, args.per_group, system, question, args.output)
            runs: dict[str, list[Outcome]] = {label: [] for label in args.sets.split(",")}
            for round_ in range(repeats.get(name, 1)):  # round-robin: machine load drifts over all sets
                for label in runs:
                    started = time.monotonic()
                    runs[label].append(run_set(stack, label, workload, args))
                    wall = time.monotonic() - started
                    print(f"  {name} / {label} / run {round_ + 1}: {wall:.0f}s wall", file=sys.stderr)
            results = {label: median_run(outcomes, args.time_scale) for label, outcomes in runs.items()}
            print_table(workload, results, args.time_scale, repeats.get(name, 1))
    finally:
        if stack is not None:
            for process in reversed(stack.processes):
                process.stop(timeout=5)
        if nats_server is not None:
            nats_server.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")


if __name__ == "__main__":
    main()
