"""Router at fleet scale: one router process loaded with synthetic state published on FERRY_OBJECTS.

    uv run python bench/router_scale/run.py [--scales 10x100,100x1000,1000x10000] [--big]
        [--idle 5] [--changes 20] [--skip-fleet]

For each (models, pods) scale, in one namespace (the worst case), with the default scheduler
plugins: a private nats-server gets ``models`` ModelServers and ModelRoutes with ``pods/models``
Running pods each -- one in ``--hang-every`` at an address that accepts no connection and never
answers (a listening socket nobody accepts on: hung engines), the others at addresses on
127.0.0.0/8 that refuse connections -- plus one probe model whose single pod is a live mock engine.
Then one router process (pinned to CPU 0) is started and the table prints:

- ``/readyz`` seconds from spawn, RSS, CPU share while idle (``--idle`` seconds): first with every
  engine left to the router's scraper (they all refuse or hang but the probe: the scraper backs off),
  then with every engine's load pushed on the bus as its runtime sidecar would (``--push-rate``
  messages per engine per second, 1 by default: what the router reads when every engine's load
  changes every second; an idle sidecar sends one per 5 s heartbeat);
- route change → routable p99: a new ModelRoute to the probe server is published and the router
  is polled until it serves it (``--changes`` times);
- added p50 at concurrency 1 for the 1-endpoint probe model (wrk through the router minus wrk
  straight at the engine, in the same run).

Then the scheduler is called directly (no HTTP) with the default plugins and a warm prefix cache
at 1, 10, 100 and 1,000 endpoints per model, with sampling off and at the default sample size.
``--big`` adds 2,000 x 20,000. Loopback only, bounded; prints tables, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
from ferry_local.binaries import find_binaries
from ferry_local.natsd import NatsServer, service_url
from ferry_local.processes import ManagedProcess, spawn
from ferry_local.readiness import free_port
from ferry_router.scheduler import SchedulingContext, build_scheduler
from ferry_router.scheduler.config import DEFAULT_SAMPLE_SIZE, DEFAULT_YAML, parse_config
from ferry_router.state.resources import Pod
from ferry_router.state.table import Endpoint, EndpointMetrics
from ferry_schemas.load import load_subject
from ferry_schemas.runtime.jetstream import declare_streams

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.fleet import publish_objects, wait_http
from bench.router.run import ROUTER_ARGV, cpu_seconds, cpus, pinned, reference_loop_us, router_env, run_wrk

NAMESPACE = "scale"
PROBE = "probe-model"


def server(name: str, model: str, port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "workloadSelector": {"matchLabels": {"app": name}},
            "workloadPort": {"port": port},
            "inferenceEngine": "vLLM",
            "model": model,
        },
    }


def route(name: str, model: str, server_name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"modelName": model, "rules": [{"targetModels": [{"modelServerName": server_name}]}]},
    }


def pod(name: str, app: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": app}},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


HANG_HOST = "127.0.9.3"


def fleet(
    models: int, pods: int, port: int, probe_host: str, hang_every: int
) -> list[tuple[str, dict[str, Any]]]:
    """The synthetic world: a server and a route per model, pods on refusing 127.100+ addresses,
    and the probe model with its one live engine."""
    objects: list[tuple[str, dict[str, Any]]] = []
    for m in range(models):
        objects.append(("modelservers", server(f"ms-{m}", f"model-{m}", port)))
        objects.append(("modelroutes", route(f"mr-{m}", f"model-{m}", f"ms-{m}")))
    for p in range(pods):
        ip = f"127.{100 + p // 65000}.{(p // 250) % 250 + 1}.{p % 250 + 1}"
        if hang_every and p % hang_every == 0:
            ip = HANG_HOST
        objects.append(("pods", pod(f"pod-{p}", f"ms-{p % models}", ip)))
    objects.append(("modelservers", server("probe", PROBE, port)))
    objects.append(("modelroutes", route("probe", PROBE, "probe")))
    objects.append(("pods", pod("probe-0", "probe", probe_host)))
    return objects


class LoadPusher:
    """Every pod's sidecar, in one process of its own: ``rate`` EngineLoad messages per pod per second.
    (A thread of the bench process held the GIL for tens of ms per burst, and the route-change
    probe's own timings waited behind it.) Not pinned: on a core shared with the engine and wrk it
    fell behind its rate on a loaded machine."""

    def __init__(
        self, nats_url: str, models: int, pods: int, rate: float, *, unchanged: bool = False
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._sent = context.Value("q", 0)
        self._stop = context.Event()
        self._process = context.Process(
            target=push_load,
            args=(service_url("runtime", nats_url), models, pods, rate, self._sent, self._stop, unchanged),
            daemon=True,
        )

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    def __enter__(self) -> LoadPusher:
        """Start the process; return once its first burst is out (spawning and importing take
        seconds on a loaded machine)."""
        self._process.start()
        deadline = time.monotonic() + 60
        while self.sent == 0 and self._process.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def push_load(url: str, models: int, pods: int, rate: float, sent: Any, stop: Any, unchanged: bool) -> None:
    """The pusher process: one burst of every pod's load per ``1 / rate`` seconds until ``stop``;
    each with a new value, or with ``unchanged`` the same every time (idle engines re-reporting)."""
    subjects = [load_subject(NAMESPACE, f"model-{p % models}", f"pod-{p}") for p in range(pods)]
    templates = [
        orjson.dumps({
            "namespace": NAMESPACE, "pod": f"pod-{p}", "model": f"model-{p % models}", "epoch": "bench",
            "seq": 0, "sentAt": 0.0, "waiting": 1.0, "running": 2.0, "kvCacheUsage": 0.25,
        }).replace(b'"seq":0,"sentAt":0.0', b'"seq":%d,"sentAt":%f')
          .replace(b'"waiting":1.0', b'"waiting":%d')
        for p in range(pods)
    ]  # fmt: skip

    async def run() -> None:
        nc = await nats.connect(url)
        seq, period = 0, 1.0 / rate
        while not stop.is_set():
            started, seq = time.monotonic(), seq + 1
            now = time.time()
            for p, (subject, template) in enumerate(zip(subjects, templates, strict=True)):
                waiting = 1 if unchanged else (seq + p) % 8  # a new value each time, or never
                await nc.publish(subject, template % (seq, now, waiting))
            await nc.flush()
            with sent.get_lock():
                sent.value += len(subjects)
            await asyncio.sleep(max(period - (time.monotonic() - started), 0.0))
        await nc.drain()

    asyncio.run(run())


def router_metrics(metrics_url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        return str(response.read().decode())


def pushed_endpoints(text: str) -> int:
    """Endpoints the router schedules on fresh pushed load (``ferry_router_endpoints``; a router
    from before that gauge: its per-endpoint load-age series that say ``source="push"``)."""
    lines = text.splitlines()
    if any(line.startswith("ferry_router_endpoints{") for line in lines):
        return sum(
            int(float(line.rsplit(" ", 1)[1])) for line in lines
            if line.startswith("ferry_router_endpoints{") and 'load_source="push"' in line
            and 'load_state="fresh"' in line
        )  # fmt: skip
    return sum(
        1 for line in lines
        if line.startswith("ferry_router_endpoint_load_age_seconds{") and 'source="push"' in line
    )  # fmt: skip


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU of the process alone (without its load reader)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_messages_read(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith('ferry_load_messages_total{result="ok"}')
    )  # fmt: skip


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def publish(nats_url: str, objects: list[tuple[str, dict[str, Any]]]) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await declare_streams(js)
    await publish_objects(js, objects, batch=500)
    await nc.drain()


async def route_change_ms(
    nats_url: str, debug_url: str, router_url: str, changes: int
) -> tuple[list[float], list[float]]:
    """Publish a new ModelRoute to the probe server ``changes`` times; per change, the ms until the
    router's routing table holds it (its debug view polled back to back from the moment of publishing:
    the table the request path matches against, read on the same event loop) and until a completion
    for its model is answered 200 through the router (one request once the route is held: that adds a
    whole proxied request, engine included, which is the added-latency column's business)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    routable: list[float] = []
    answered: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def held(url: str, deadline: float) -> float | None:
            while time.perf_counter() < deadline:
                async with session.get(url) as r:
                    await r.read()
                    if r.status == 200:
                        return time.perf_counter()
            return None

        for i in range(changes):
            model = f"changed-{i}-{time.time_ns()}"
            url = f"{debug_url}/debug/config_dump/namespaces/{NAMESPACE}/modelroutes/{model}"
            started = time.perf_counter()
            at, _ = await asyncio.gather(
                held(url, started + 30), publish_objects(js, [("modelroutes", route(model, model, "probe"))])
            )
            if at is None:
                continue
            routable.append((at - started) * 1000)
            body = orjson.dumps({"model": model, "prompt": "hi", "max_tokens": 1})
            async with session.post(router_url, data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()
                if r.status == 200:
                    answered.append((time.perf_counter() - started) * 1000)
    await nc.drain()
    return routable, answered


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def compile_router() -> None:
    """Write the bytecode of everything the router imports, as the image's ``pip install`` does:
    with ``PYTHONDONTWRITEBYTECODE`` set and no ``.pyc`` yet, every router start compiles its
    sources again, and on a busy core that, not the snapshot, was most of ``/readyz``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import ferry_router.__main__"], env=env, check=True)


def measure_fleet(models: int, pods: int, args: argparse.Namespace, work: Path) -> str:
    router_cpu, load_cpu = cpus()
    processes: list[ManagedProcess] = []
    processes_cleanup: list[Callable[[], None]] = []
    nats_server = NatsServer(find_binaries().nats_server, work / f"nats-{models}", work / "logs")
    nats_server.start()
    try:
        port = free_port()
        probe_host = "127.0.9.2"
        engine = spawn(
            f"engine-{models}",
            pinned(load_cpu, [sys.executable, "-m", "ferry_mock_engine", "--host", probe_host,
                              "--port", str(port), "--served-model-name", PROBE, "--mock-id", "probe"]),
            work / "logs",
        )  # fmt: skip
        processes.append(engine)
        wait_http(f"http://{probe_host}:{port}/health", "probe engine", engine)
        hung = socket.create_server((HANG_HOST, port), backlog=4096)  # never accepted: engines that hang
        processes_cleanup.append(hung.close)
        asyncio.run(publish(nats_server.url, fleet(models, pods, port, probe_host, args.hang_every)))
        router_port, metrics_port, debug_port = free_port(), free_port(), free_port()
        env = router_env(nats_server.url, router_port, metrics_port)
        env["FERRY_ROUTER_DEBUG_PORT"] = str(debug_port)  # the probe reads the routing table there
        started = time.perf_counter()
        router = spawn(f"router-{models}", pinned(router_cpu, ROUTER_ARGV), work / "logs", env)
        processes.append(router)
        wait_http(f"http://127.0.0.1:{router_port}/readyz", "router", router, timeout=120)
        ready_s = time.perf_counter() - started
        time.sleep(1)  # let the first scrape cycle start before measuring idle CPU
        before = cpu_seconds(router.pid)
        time.sleep(args.idle)
        idle_pct = (cpu_seconds(router.pid) - before) / args.idle * 100
        pushed_pct, own_pct, push_rate, read_rate, on_push = float("nan"), float("nan"), 0.0, 0.0, 0
        router_url = f"http://127.0.0.1:{router_port}/v1/completions"
        body = orjson.dumps({"model": PROBE, "prompt": "hello router", "max_tokens": 4}).decode()
        with contextlib.ExitStack() as pushing:
            if args.push_rate > 0:
                pusher = LoadPusher(
                    nats_server.url, models, pods, args.push_rate, unchanged=args.push_unchanged
                )
                pushing.enter_context(pusher)
                time.sleep(2)  # the board takes the pushed load; the scraper stops visiting those pods
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
                read_before = load_messages_read(router_metrics(metrics_url))
                sent, before, own_before = pusher.sent, cpu_seconds(router.pid), own_cpu_seconds(router.pid)
                time.sleep(args.idle)
                pushed_pct = (cpu_seconds(router.pid) - before) / args.idle * 100
                own_pct = (own_cpu_seconds(router.pid) - own_before) / args.idle * 100
                push_rate = (pusher.sent - sent) / args.idle
                text = router_metrics(metrics_url)
                read_rate = (load_messages_read(text) - read_before) / args.idle
                on_push = pushed_endpoints(text)
            # while every engine still pushes its load: what a request and a route change see then
            debug_url = f"http://127.0.0.1:{debug_port}"
            changes, answered = asyncio.run(
                route_change_ms(nats_server.url, debug_url, router_url, args.changes)
            )
            via = run_wrk(router_url, 1, args.wrk, load_cpu, body)
            # the engine, wrk and the pusher share a core: straight at the engine under the same push
            direct = run_wrk(f"http://{probe_host}:{port}/v1/completions", 1, args.wrk, load_cpu, body)
        return (
            f"{models:>6,} / {pods:<7,} | {ready_s:>9.1f} s | {rss_mb(router.pid):>6.0f} MB | "
            f"{idle_pct:>7.0f} % | {own_pct:>13.0f} % +{pushed_pct - own_pct:>4.0f} % | "
            f"{push_rate:>6,.0f}/s {read_rate:>6,.0f}/s "
            f"{on_push:>7,} | "
            f"{p99(changes):>10.1f} ms ({len(changes)}/{args.changes}) | "
            f"{p99(answered):>7.1f} ms ({len(answered)}/{args.changes}) | "
            f"{via.p50_ms - direct.p50_ms:>8.2f} ms"
        )
    finally:
        for process in reversed(processes):
            process.stop(timeout=5)
        for close in processes_cleanup:
            close()
        nats_server.stop()


def endpoint(i: int, rng: random.Random) -> Endpoint:
    e = Endpoint(pod=Pod(NAMESPACE, f"p{i}", f"127.0.0.{i % 250 + 1}", {}, True), port=8000, engine="vllm")
    e.metrics = EndpointMetrics(
        kv_cache_usage=rng.random(), waiting=rng.randint(0, 3), running=rng.randint(0, 8),
        ttft=rng.uniform(0.05, 0.5), tpot=rng.uniform(0.01, 0.05),
    )  # fmt: skip
    e.inflight = rng.randint(0, 8)
    return e


def schedule_us(n: int, sample_size: int, requests: int, batches: int = 9) -> float:
    """CPU µs per request of rank() + served() with the default plugins, prefix cache warm: the
    median over ``batches`` batches of ``time.process_time`` per request (CPU time, so the run queue
    of a shared machine is not in it; a 2 ms rank at 1,000 unscored endpoints is preempted mid-way
    there and its wall time is the queue's)."""
    rng = random.Random(n)
    scheduler = build_scheduler(parse_config(DEFAULT_YAML + f"  sampleSize: {sample_size}\n"))
    endpoints = [endpoint(i, rng) for i in range(n)]
    members = {e.key: e for e in endpoints}
    prompts = [f"system prompt {g} " * 40 + f"question {q}" for g in range(20) for q in range(5)]
    for prompt in prompts:  # warm: every group's prefix is held somewhere
        scheduler.served(SchedulingContext("m", "m", prompt), [rng.choice(endpoints)])
    per_batch = max(requests // batches, 1)
    times: list[float] = []
    for b in range(batches):
        contexts = [
            SchedulingContext("m", "m", prompts[(b * per_batch + i) % len(prompts)]) for i in range(per_batch)
        ]
        started = time.process_time()
        for ctx in contexts:
            ranked = scheduler.rank(ctx, endpoints, members=members)
            scheduler.served(ctx, ranked[:1])
        times.append((time.process_time() - started) / per_batch)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scales", default="10x100,100x1000,1000x10000", help="models x pods, comma-separated"
    )
    parser.add_argument("--big", action="store_true", help="also 2000 x 20000")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measurement")
    parser.add_argument("--changes", type=int, default=20, help="route changes timed per scale")
    parser.add_argument("--wrk", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--requests", type=int, default=2000, help="scheduler calls per size")
    parser.add_argument("--hang-every", type=int, default=10, help="every n-th pod hangs (0: none)")
    parser.add_argument("--skip-fleet", action="store_true", help="only the scheduler table")
    parser.add_argument(
        "--push-rate", type=float, default=1.0, help="pushed load messages per engine per second (0: none)"
    )
    parser.add_argument(
        "--push-unchanged",
        action="store_true",
        help="every pushed message repeats the engine's load (idle engines)",
    )
    args = parser.parse_args()
    scales = [tuple(int(x) for x in s.split("x")) for s in args.scales.split(",") if s]
    if args.big:
        scales.append((2000, 20000))
    if not args.skip_fleet:
        work = Path(tempfile.mkdtemp(prefix="ferry-router-scale-"))
        compile_router()
        try:
            print(
                f"load average {os.getloadavg()[0]:.1f}; reference loop {reference_loop_us():.1f} us "
                f"(about 9 on an idle core); router pinned to CPU {cpus()[0]}"
            )
            header = (
                f"{'models / pods':>16} | {'/readyz':>11} | {'RSS':>9} | {'idle CPU':>9} | "
                f"{'pushed: router + reader':>16} | {'sent/s':>8} {'read/s':>8} {'on push':>7} | "
                f"{'route change→routable p99':>26} | {'first answer p99':>19} | {'added p50':>11}"
            )
            print(header)
            print("-" * len(header))
            for models, pods in scales:
                print(measure_fleet(models, pods, args, work), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"scheduling CPU time per request (rank + served, default plugins, warm prefix cache), median "
          f"of 9 batches of {max(args.requests // 9, 1)}; reference loop {reference_loop_us():.1f} us, "
          f"load average {os.getloadavg()[0]:.1f}:")  # fmt: skip
    print(f"{'endpoints':>9} | {'all endpoints':>14} | {f'sampleSize {DEFAULT_SAMPLE_SIZE}':>14}")
    for n in (1, 10, 100, 1000):
        full = schedule_us(n, 0, args.requests)
        sampled = schedule_us(n, DEFAULT_SAMPLE_SIZE, args.requests)
        print(f"{n:>9,} | {full:>11.1f} µs | {sampled:>11.1f} µs")


if __name__ == "__main__":
    main()
