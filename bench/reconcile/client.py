"""Client CPU per API request of :class:`~ferry_schemas.runtime.kubeconn.KubeConnection`, alone.

    uv run python -m bench.reconcile.client                    # a local stack of its own
    KUBECONFIG=… uv run python -m bench.reconcile.client --requests 2000 --passes 5

Sends the shapes of request the applier and status send most, in a loop against a real API server
(``KUBECONFIG``'s, else a local stack started and stopped here): a server-side apply of a ConfigMap
answered with its metadata only (the applier's writes), a merge patch of it (status's and the Event
recorder's), and a GET of it. ``--in-flight`` requests run at once, as a service's workers do. Prints
this process's CPU time (``time.process_time``) per request for each shape and pass, and the minimum;
on a shared machine read the minimum, and compare two trees by running each a few times, interleaved.
The API server's CPU is not counted: only the client's (request building, TLS, parsing the answer).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ferry_local.paths import state_dir
from ferry_local.stack import LocalStack
from ferry_schemas.runtime import kubeconn

NAMESPACE = "default"
NAMES = 32
"""ConfigMaps written round-robin (one object per in-flight request: no conflicts)."""
PAYLOAD = "x" * 2000
"""About the size of a ModelServing's apply body."""


def _config_map(name: str, serial: int) -> kubeconn.JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"bench": "client"}},
        "data": {"payload": PAYLOAD, "serial": str(serial)},
    }


def _path(name: str = "") -> str:
    return kubeconn.object_path("", "v1", "configmaps", NAMESPACE, name)


async def _measure(n: int, in_flight: int, one: Callable[[int], Awaitable[object]]) -> float:
    """CPU µs per request of ``n`` calls of ``one``, ``in_flight`` at once."""
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await one(i)

    start = time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return (time.process_time() - start) / n * 1e6


async def run(requests: int, in_flight: int, passes: int) -> None:
    api = await kubeconn.connect(pool_size=kubeconn.REQUEST_POOL_SIZE)
    try:
        names = [f"bench-client-{i}" for i in range(NAMES)]

        async def apply(i: int) -> object:
            name = names[i % NAMES]
            return await api.apply(_path(name), _config_map(name, i), "bench", accept=kubeconn.METADATA_ONLY)

        async def patch(i: int) -> object:
            body = {"metadata": {"annotations": {"bench/serial": str(i)}}}
            return await api.send(
                "PATCH", _path(names[i % NAMES]), body, content_type=kubeconn.MERGE_PATCH,
                accept=kubeconn.METADATA_ONLY,
            )  # fmt: skip

        async def get(i: int) -> object:
            return await api.send("GET", _path(names[i % NAMES]))

        shapes = {"apply (metadata answer)": apply, "merge patch (metadata answer)": patch, "get": get}
        for i in range(NAMES):  # every object exists, every connection is open: measure the steady state
            await apply(i)
        await _measure(in_flight * 4, in_flight, get)
        figures: dict[str, list[float]] = {shape: [] for shape in shapes}
        for _ in range(passes):
            for shape, one in shapes.items():
                figures[shape].append(await _measure(requests, in_flight, one))
        print(f"client CPU µs per request, {requests} requests a pass, {in_flight} in flight")
        for shape, values in figures.items():
            row = "  ".join(f"{v:6.1f}" for v in values)
            print(f"{shape:30} {row}   median {statistics.median(values):6.1f}  min {min(values):6.1f}")
        await api.send("DELETE", _path(), query=[("labelSelector", "bench=client")])
    finally:
        await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests per shape and pass")
    parser.add_argument("--in-flight", type=int, default=8, help="requests at once")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    stack, work = None, None
    if not os.environ.get("KUBECONFIG"):
        work = Path(tempfile.mkdtemp(prefix="bench-client-", dir=state_dir()))
        stack = LocalStack(work / "stack", with_nats=False)
        os.environ["KUBECONFIG"] = stack.start().kubeconfig
    try:
        asyncio.run(run(args.requests, args.in_flight, args.passes))
    finally:
        if stack is not None and work is not None:
            stack.stop()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
