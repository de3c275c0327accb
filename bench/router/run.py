"""Router benchmark: requests/s and p50/p99 through the router vs straight to the engine.

    uv run python bench/router/run.py [--duration 5] [--engines 2] [--concurrency 1,16,64,256]
        [--workers 1,2] [--profile]

Starts a private nats-server, mock engines and one router process (pinned with ``taskset``:
router on CPU 0, engines and the load generator on CPU 1), publishes a ModelServer/ModelRoute/Pods
on the bus like the watcher does, then runs ``wrk`` at each concurrency against the router and
directly against one engine in the same run, and finally opens N concurrent streams through the
router and counts errors. ``--workers`` then restarts the router with each number of worker
processes (``FERRY_ROUTER_WORKERS``, SO_REUSEPORT) and prints the scaling at concurrency 64;
``--profile`` records the router with py-spy during the concurrency-16 run (``--profile-at N``:
another concurrency) and prints where the CPU went (``pyspy_summary.py``). Prints tables; asserts
nothing (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from ferry_local.binaries import find_binaries
from ferry_local.natsd import NatsServer, service_url
from ferry_local.processes import ManagedProcess, spawn
from ferry_local.readiness import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import pyspy_summary  # beside this file

from bench.fleet import publish_fleet, wait_http  # the repository's root

HERE = Path(__file__).resolve().parent
MODEL = "bench-model"
NAMESPACE = "bench"


ROUTER_ARGV = [sys.executable, "-c", "from ferry_router.__main__ import main; main()"]


def router_env(nats_url: str, port: int, metrics_port: int) -> dict[str, str]:
    """Environment of one benchmarked router: default scheduler, no debug port, no access log."""
    return {
        "FERRY_NATS_URL": service_url("router", nats_url),  # the router's own NATS user
        "FERRY_ROUTER_PORT": str(port),
        "FERRY_ROUTER_METRICS_PORT": str(metrics_port),
        "FERRY_ROUTER_DEBUG_PORT": "-1",
        "FERRY_ROUTER_CONFIG": "",
        "ACCESS_LOG_ENABLED": "false",
        "FERRY_LOG_LEVEL": "WARNING",
        "FERRY_ROUTER_DRAIN_PERIOD": "0s",
    }


def cpus() -> tuple[str, str]:
    count = os.cpu_count() or 1
    return ("0", "1") if count >= 2 else ("0", "0")


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else argv


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, concurrency: int, duration: float, cpu: str, body: str) -> WrkResult:
    argv = pinned(
        cpu,
        [
            "wrk", "-t1", f"-c{concurrency}", f"-d{max(int(duration), 1)}s", "--latency", "--timeout", "10s",
            "-s", str(HERE / "post.lua"), url,
        ],
    )  # fmt: skip
    out = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "WRK_BODY": body}, check=True
    ).stdout
    percentiles = dict(re.findall(r"^\s*(50|99)(?:\.\d+)?%\s+(\S+)\s*$", out, re.M))
    if "50" not in percentiles or "99" not in percentiles:
        raise SystemExit(f"cannot read wrk's latency distribution:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in match.groups())
    return WrkResult(rps, _ms(percentiles["50"]), _ms(percentiles["99"]), errors, total)


async def concurrent_streams(url: str, count: int, tokens: int) -> tuple[int, int, float]:
    """Open ``count`` streaming completions at once; returns (ok, errors, seconds)."""
    body = orjson.dumps({"model": MODEL, "prompt": "stream please", "max_tokens": tokens, "stream": True})
    connector = aiohttp.TCPConnector(limit=0)
    ok = errors = 0
    started = time.perf_counter()
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def one() -> bool:
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    text = await response.text()
                    return response.status == 200 and text.rstrip().endswith("data: [DONE]")
            except (aiohttp.ClientError, TimeoutError):
                return False

        results = await asyncio.gather(*(one() for _ in range(count)))
    ok = sum(results)
    errors = count - ok
    return ok, errors, time.perf_counter() - started


def set_engine_pace(engine: str, itl: float) -> None:
    """Set a mock engine's inter-token latency (its ``POST /mock/config``)."""
    request = urllib.request.Request(
        f"{engine}/mock/config", data=orjson.dumps({"itl": itl}), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its worker processes, MiB (VmRSS from /proc)."""
    total = 0
    for each in [pid, *children_of(pid)]:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        if match := re.search(r"^VmRSS:\s+(\d+) kB", status, re.M):
            total += int(match.group(1))
    return total / 1024


def gauge(metrics_url: str, name: str) -> float:
    """One unlabelled gauge of the router's /metrics (0 when unreadable: a loop busy with 1,000
    streams may answer late, hence the long timeout)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


class PeakSampler:
    """Samples the router's RSS and open requests every 50 ms on a thread; keeps the peaks."""

    def __init__(self, pid: int, metrics_url: str) -> None:
        self.pid, self.metrics_url = pid, metrics_url
        self.rss = self.active = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.rss = max(self.rss, rss_mib(self.pid))
            self.active = max(self.active, gauge(self.metrics_url, "kthena_router_active_requests"))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live worker processes (from /proc), to separate cost
    from CPU contention."""
    total = 0.0
    for each in [pid, *children_of(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def children_of(pid: int) -> list[int]:
    """Every descendant of ``pid`` (the router's worker processes and load readers), whichever of
    its threads started them."""
    found: list[int] = []
    direct: list[str] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            direct += children.read_text().split()
        except OSError:
            continue
    for child in (int(c) for c in direct):
        found += [child, *children_of(child)]
    return found


def reference_loop_us() -> float:
    """Time of a fixed pure-Python loop: ~8-10 us on an idle modern core; higher = slower/contended CPU."""
    best = float("inf")
    for _ in range(200):
        start = time.perf_counter()
        sum(range(1000))
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--engines", type=int, default=2, help="mock engines behind the router")
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams in the last phase")
    parser.add_argument("--stream-tokens", type=int, default=64, help="tokens per stream in that phase")
    parser.add_argument(
        "--stream-itl",
        type=float,
        default=0.05,
        help="the engines' seconds between tokens in that phase (so every stream is open at once)",
    )
    parser.add_argument("--streams-only", action="store_true", help="skip the wrk runs")
    parser.add_argument("--access-log", choices=["file", "off"], default="file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--workers", default="", help="worker counts for the scaling table, e.g. 1,2")
    parser.add_argument("--profile", action="store_true", help="py-spy the router at one concurrency")
    parser.add_argument("--profile-at", type=int, default=16, help="the concurrency --profile records")
    parser.add_argument(
        "--baseline-src",
        default="",
        help="services/router/src of another checkout: a second router from it is measured in the same run",
    )
    args = parser.parse_args()
    router_cpu, load_cpu = cpus()
    work = Path(tempfile.mkdtemp(prefix="ferry-router-bench-"))
    processes: list[ManagedProcess] = []
    nats_server = None
    try:
        nats_url = os.environ.get("NATS_URL")
        if not nats_url:
            nats_server = NatsServer(find_binaries().nats_server, work / "nats", work / "logs")
            nats_server.start()
            nats_url = nats_server.url
        port = free_port()
        hosts = [f"127.0.9.{i + 2}" for i in range(args.engines)]
        for i, host in enumerate(hosts):
            argv = pinned(load_cpu, [
                sys.executable, "-m", "ferry_mock_engine", "--host", host, "--port", str(port),
                "--served-model-name", MODEL, "--mock-id", f"engine-{i}",
            ])  # fmt: skip
            engine = spawn(f"engine-{i}", argv, work / "logs")
            processes.append(engine)
            wait_http(f"http://{host}:{port}/health", f"engine {i}", engine)
        asyncio.run(publish_fleet(nats_url, NAMESPACE, MODEL, hosts, port))
        router_port, metrics_port = free_port(), free_port()
        base_env = router_env(nats_url, router_port, metrics_port)
        base_env["ACCESS_LOG_ENABLED"] = "false" if args.access_log == "off" else "true"
        base_env["ACCESS_LOG_OUTPUT"] = str(work / "access.log")

        def start_router(workers: int, cpu: str) -> ManagedProcess:
            argv = pinned(cpu, ROUTER_ARGV)
            env = {**base_env, "FERRY_ROUTER_WORKERS": str(workers)}
            process = spawn(f"router-{workers}", argv, work / "logs", env)
            processes.append(process)
            wait_http(f"http://127.0.0.1:{router_port}/readyz", "router", process)
            return process

        router = start_router(1, router_cpu)
        body = orjson.dumps({"model": MODEL, "prompt": "hello router", "max_tokens": 4}).decode()
        router_url = f"http://127.0.0.1:{router_port}/v1/completions"
        engine_url = f"http://{hosts[0]}:{port}/v1/completions"
        run_wrk(router_url, 16, 2, load_cpu, body)  # warm-up: connections, scraper, caches
        baseline = None
        if args.baseline_src:
            # the same router settings on its own ports, importing ferry_router from the other tree
            base_port = free_port()
            env = {**router_env(nats_url, base_port, free_port()), "PYTHONPATH": args.baseline_src,
                   "ACCESS_LOG_ENABLED": base_env["ACCESS_LOG_ENABLED"],
                   "ACCESS_LOG_OUTPUT": str(work / "baseline-access.log")}  # fmt: skip
            baseline = spawn("router-baseline", pinned(router_cpu, ROUTER_ARGV), work / "logs", env)
            processes.append(baseline)
            wait_http(f"http://127.0.0.1:{base_port}/readyz", "baseline router", baseline)
            baseline_url = f"http://127.0.0.1:{base_port}/v1/completions"
            run_wrk(baseline_url, 16, 2, load_cpu, body)
        print(f"router on CPU {router_cpu}; {args.engines} engine(s) and wrk on CPU {load_cpu}; "
              f"{args.duration:.0f}s per run; access log {args.access_log}")  # fmt: skip
        print(
            f"reference loop: {reference_loop_us():.1f} us (about 9 on an idle core); "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        header = (
            f"{'conc':>5} | {'router req/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} | "
            f"{'engine req/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} | "
            f"{'added p50':>9} {'added p99':>9} | {'router CPU us/req':>17} {'req/s per core':>14}"
        )
        print(header)
        print("-" * len(header))
        for concurrency in (int(c) for c in args.concurrency.split(",") if c and not args.streams_only):
            cpu_before = cpu_seconds(router.pid)
            spy = None
            if args.profile and concurrency == args.profile_at:
                spy = pyspy_summary.record(router.pid, args.duration, work / "profile.raw")
            via = run_wrk(router_url, concurrency, args.duration, load_cpu, body)
            cpu_us = (cpu_seconds(router.pid) - cpu_before) / max(via.requests, 1) * 1e6
            if spy is not None:
                spy.wait()
            direct = run_wrk(engine_url, concurrency, args.duration, load_cpu, body)
            line = (
                f"{concurrency:>5} | {via.rps:>12.0f} {via.p50_ms:>8.2f} {via.p99_ms:>8.2f} "
                f"{via.errors:>4} | "
                f"{direct.rps:>12.0f} {direct.p50_ms:>8.2f} {direct.p99_ms:>8.2f} {direct.errors:>4} | "
                f"{via.p50_ms - direct.p50_ms:>9.2f} {via.p99_ms - direct.p99_ms:>9.2f} | {cpu_us:>17.0f} "
                f"{1e6 / max(cpu_us, 1):>14.0f}"
            )
            if baseline is not None:
                before = cpu_seconds(baseline.pid)
                other = run_wrk(baseline_url, concurrency, args.duration, load_cpu, body)
                base_us = (cpu_seconds(baseline.pid) - before) / max(other.requests, 1) * 1e6
                line += (
                    f" | baseline: {base_us:>4.0f} us/req, added p50 {other.p50_ms - direct.p50_ms:.2f} ms; "
                    f"CPU ratio {cpu_us / max(base_us, 1):.2f}"
                )
            print(line)
        if args.profile and (work / "profile.raw").exists():
            print(
                f"py-spy at concurrency {args.profile_at} "
                "(share of the router's samples, by the innermost known frame):"
            )
            pyspy_summary.print_summary(work / "profile.raw")
        if args.streams:
            for host in hosts:  # a token pace that keeps every stream open until the last one opens
                set_engine_pace(f"http://{host}:{port}", args.stream_itl)
            idle = rss_mib(router.pid)
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            with PeakSampler(router.pid, metrics_url) as peak:
                ok, errors, seconds = asyncio.run(
                    concurrent_streams(router_url, args.streams, tokens=args.stream_tokens)
                )
            print(
                f"{args.streams} concurrent streams through the router ({args.stream_tokens} tokens each): "
                f"{ok} complete, {errors} errors, {seconds:.1f}s; at most {peak.active:.0f} open at once; "
                f"router RSS {idle:.0f} MiB before, peak {peak.rss:.0f} MiB "
                f"({args.stream_itl * 1000:.0f} ms between tokens)"
            )
            for host in hosts:
                set_engine_pace(f"http://{host}:{port}", 0.0)
        if args.workers:
            router.stop(timeout=10)
            print("scaling with worker processes (SO_REUSEPORT), concurrency 64, router on every CPU:")
            print(f"{'workers':>7} | {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} | "
                  f"{'CPU us/req':>10} {'req/s per core':>14} {'cores used':>10}")  # fmt: skip
            for workers in (int(w) for w in args.workers.split(",")):
                scaled = start_router(workers, "0-1" if router_cpu != load_cpu else router_cpu)
                run_wrk(router_url, 16, 2, load_cpu, body)  # warm-up of every worker
                cpu_before, started = cpu_seconds(scaled.pid), time.perf_counter()
                via = run_wrk(router_url, 64, args.duration, load_cpu, body)
                used = cpu_seconds(scaled.pid) - cpu_before
                cpu_us = used / max(via.requests, 1) * 1e6
                cores = used / (time.perf_counter() - started)
                per_core = 1e6 / max(cpu_us, 1)
                print(f"{workers:>7} | {via.rps:>8.0f} {via.p50_ms:>8.2f} {via.p99_ms:>8.2f} "
                      f"{via.errors:>4} | {cpu_us:>10.0f} {per_core:>14.0f} {cores:>10.2f}")  # fmt: skip
                scaled.stop(timeout=10)
    finally:
        for process in reversed(processes):
            process.stop(timeout=5)
        if nats_server is not None:
            nats_server.stop()
        if args.keep:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
