"""Upstream client choice: CPU per proxied call for httpx vs aiohttp, same engine, same load.

    uv run python bench/router/clients.py [--requests 4000] [--concurrency 16]

Starts one mock engine (pinned to CPU 1) and, in this process (pinned to CPU 0, uvloop), sends
the same small POST with each client at the given concurrency. Prints requests/s and the
client process's CPU microseconds per request (the number that bounds a router's throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import orjson
import uvloop
import yarl
from ferry_local.processes import spawn
from ferry_local.readiness import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MODEL, cpus, pinned, wait_http

BODY = orjson.dumps({"model": MODEL, "prompt": "hello router", "max_tokens": 4})
HEADERS = {"Content-Type": "application/json"}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(call: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> tuple[float, float]:
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    for _ in range(200):  # warm-up
        await call()
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    return requests / wall, cpu / requests * 1e6


async def measure(url: str, requests: int, concurrency: int) -> dict[str, tuple[float, float]]:
    results = {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), limits=limits) as client:

        async def httpx_call() -> None:
            response = await client.post(url, content=BODY, headers=HEADERS)
            await response.aread()

        results["httpx"] = await drive(httpx_call, requests, concurrency)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30, connect=5)
    ) as session:

        async def aiohttp_call() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()

        results["aiohttp"] = await drive(aiohttp_call, requests, concurrency)
        prebuilt = yarl.URL(url)

        async def aiohttp_url_call() -> None:
            async with session.post(prebuilt, data=BODY, headers=HEADERS) as response:
                await response.read()

        results["aiohttp, prebuilt URL"] = await drive(aiohttp_url_call, requests, concurrency)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    mine, theirs = cpus()
    os.sched_setaffinity(0, {int(mine)})
    work = Path(tempfile.mkdtemp(prefix="ferry-client-bench-"))
    port = free_port()
    host = "127.0.9.2"
    engine_argv = [sys.executable, "-m", "ferry_mock_engine", "--host", host, "--port", str(port)]
    argv = pinned(theirs, [*engine_argv, "--served-model-name", MODEL])
    engine = spawn("engine", argv, work)
    try:
        wait_http(f"http://127.0.9.2:{port}/health", "engine", engine)
        url = f"http://127.0.9.2:{port}/v1/completions"
        results = uvloop.run(measure(url, args.requests, args.concurrency))
        print(
            f"{args.requests} POSTs at concurrency {args.concurrency} "
            f"(client on CPU {mine}, engine on {theirs})"
        )
        print(f"{'client':>21} | {'req/s':>8} | {'CPU us/request':>14}")
        for name, (rps, cpu_us) in results.items():
            print(f"{name:>21} | {rps:>8.0f} | {cpu_us:>14.0f}")
    finally:
        engine.stop(timeout=5)


if __name__ == "__main__":
    main()
