"""py-spy of the router under load, summarised by where the CPU goes.

    uv run python bench/router/pyspy_summary.py <raw py-spy file>

``run.py --profile`` records the router with ``py-spy record -f raw`` during the concurrency-16
run and prints this summary: each sample is charged to the innermost frame that belongs to a known
part (the aiohttp client, the aiohttp server, the router's own code, Prometheus, the event loop),
so the shares add up to 100 % and say which layer costs what.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("router: HTTP server", ("ferry_router/http_server",)),
    ("router: upstream client", ("ferry_router/upstream",)),
    ("router: relay", ("ferry_router/proxy",)),
    ("router: scheduler", ("ferry_router/scheduler",)),
    ("router: access log and metrics", ("ferry_router/observability", "ferry_router/loop_metrics")),
    ("router: pipeline (app, matching, prompt, rate limit)", ("ferry_router/",)),
    ("aiohttp client", ("aiohttp/client", "aiohttp/connector", "aiohttp/streams", "aiohttp/tracing")),
    (
        "aiohttp server",
        ("aiohttp/web", "aiohttp/http_writer", "aiohttp/base_protocol", "aiohttp/http_parser"),
    ),
    ("aiohttp other", ("aiohttp/", "multidict/", "yarl/")),
    ("prometheus_client", ("prometheus_client/",)),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop/")),
)
FRAME = re.compile(r"\(([^:()]+):?\d*\)$")


def part_of(frame: str) -> str | None:
    match = FRAME.search(frame)
    path = match.group(1) if match else frame
    for name, markers in PARTS:
        if any(marker in path for marker in markers):
            return name
    return None


def summarise(raw: str) -> list[tuple[str, float]]:
    """(part, share of samples) from py-spy's raw (collapsed) output, largest first."""
    totals: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        charged = "other"
        for frame in reversed(stack.split(";")):
            if (part := part_of(frame)) is not None:
                charged = part
                break
        totals[charged] += int(count)
    samples = sum(totals.values()) or 1
    return [(name, n / samples) for name, n in totals.most_common()]


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` for ``seconds`` (non-blocking sampling, raw collapsed stacks)."""
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    argv = [
        py_spy, "record", "-p", str(pid), "-d", str(max(int(seconds), 1)), "-f", "raw", "-o", str(out),
        "--nonblocking", "-r", "200",
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def print_summary(raw_file: Path) -> None:
    for name, share in summarise(raw_file.read_text()):
        print(f"  {share * 100:5.1f} %  {name}")


if __name__ == "__main__":
    print_summary(Path(sys.argv[1]))
