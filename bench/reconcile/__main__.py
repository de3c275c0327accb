"""Reconcile benchmark: apply N ModelBoosters with the pipeline running and measure.

    uv run python -m bench.reconcile            # N = 1, 50, 500
    uv run python -m bench.reconcile 1 50       # chosen sizes

Uses the stack named by ``KUBECONFIG`` when set, otherwise starts a local stack (and stops it).
Each size runs in a fresh namespace against a fresh nats-server and freshly started services.
Latencies are measured from the moment a watch on the API server sees the booster ADDED to
(a) every child stored — ModelServing, ModelServer, ModelRoute, the pod and the PodGroup — and
(b) the booster's ``Initialized`` condition turning True. CPU seconds and peak RSS come from
``/proc`` of each service process. A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry_local.binaries import find_binaries, kubernetes_bin_dir
from ferry_local.natsd import NatsServer
from ferry_local.paths import state_dir
from ferry_local.stack import LocalStack, StackInfo, install_crds
from ferry_schemas import labels as L
from ferry_watcher.kube import list_objects, load_api_client, watch_events
from kubernetes_asyncio.client.exceptions import ApiException

from tests.conftest import KubeEnv
from tests.support.cluster import Cluster, booster
from tests.support.services import PIPELINE, ServiceSet

JSON = dict[str, Any]
CHILD_PATHS = {
    "ModelServing": f"/apis/{L.WORKLOAD_API_VERSION}/namespaces/{{ns}}/modelservings",
    "ModelServer": f"/apis/{L.NETWORKING_API_VERSION}/namespaces/{{ns}}/modelservers",
    "ModelRoute": f"/apis/{L.NETWORKING_API_VERSION}/namespaces/{{ns}}/modelroutes",
    "PodGroup": f"/apis/{L.PODGROUP_API_VERSION}/namespaces/{{ns}}/podgroups",
    "Pod": "/api/v1/namespaces/{ns}/pods",
}
BOOSTERS_PATH = f"/apis/{L.WORKLOAD_API_VERSION}/namespaces/{{ns}}/modelboosters"


def expected_children(name: str) -> set[str]:
    serving = f"{name}-main"
    return {
        f"ModelServing/{serving}",
        f"ModelServer/{serving}",
        f"ModelRoute/{name}",
        f"PodGroup/{L.group_name(serving, 0)}",
        f"Pod/{L.pod_name(L.group_name(serving, 0), L.role_id('leader', 0), 0)}",
    }


@dataclass
class Timeline:
    """When the bench's own watches first saw each thing (monotonic seconds)."""

    added: dict[str, float] = field(default_factory=dict)
    initialized: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def follow(api: Any, path: str, on_object: Any, stop: asyncio.Event) -> None:
    """List then watch ``path`` until ``stop``; ``on_object(type, obj)`` for everything seen."""
    while not stop.is_set():
        try:
            items, rv = await list_objects(api, path, None)
            for obj in items:
                on_object("ADDED", obj)
            async for event in watch_events(api, path, None, rv, 60):
                if event.get("type") in ("ADDED", "MODIFIED"):
                    on_object(event["type"], event["object"])
                if stop.is_set():
                    return
        except (ApiException, OSError, TimeoutError):
            await asyncio.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def measure(
    namespace: str, names: list[str], cluster: Cluster, services: ServiceSet, limit: float
) -> JSON:
    api = await load_api_client()
    timeline = Timeline()
    wanted = {n: expected_children(n) for n in names}
    owner_of = {child: n for n, children in wanted.items() for child in children}
    stop = asyncio.Event()

    def check_done() -> None:
        if len(timeline.initialized) == len(names) and all(
            all(c in timeline.seen for c in children) for children in wanted.values()
        ):
            timeline.done.set()

    def on_booster(_: str, obj: JSON) -> None:
        name = obj["metadata"]["name"]
        now = time.monotonic()
        timeline.added.setdefault(name, now)
        conditions = (obj.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Initialized" and c.get("status") == "True" for c in conditions):
            timeline.initialized.setdefault(name, now)
            check_done()

    def on_child(kind: str) -> Any:
        def handle(_: str, obj: JSON) -> None:
            key = f"{kind}/{obj['metadata']['name']}"
            if key in owner_of:
                timeline.seen.setdefault(key, time.monotonic())
                check_done()

        return handle

    tasks = [asyncio.create_task(follow(api, BOOSTERS_PATH.format(ns=namespace), on_booster, stop))]
    tasks += [
        asyncio.create_task(follow(api, path.format(ns=namespace), on_child(kind), stop))
        for kind, path in CHILD_PATHS.items()
    ]
    await asyncio.sleep(1.0)  # watches established
    listing = {"apiVersion": "v1", "kind": "List", "items": [booster(n, namespace) for n in names]}
    cpu_before = {p.label: p.cpu_seconds() for p in services.services.values()}
    started = time.monotonic()
    # create (one POST per object, no read first); the watch stamps each booster as it is stored
    await asyncio.to_thread(
        cluster.kube.kubectl_run,
        "create",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(listing),
        timeout=limit,
    )

    async def sample() -> None:
        while not timeline.done.is_set():
            services.sample()
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    timed_out = False
    try:
        await asyncio.wait_for(timeline.done.wait(), timeout=limit)
    except TimeoutError:
        timed_out = True
    finished = time.monotonic()
    stop.set()
    for task in [*tasks, sampler]:
        task.cancel()
    await asyncio.gather(*tasks, sampler, return_exceptions=True)
    await api.close()
    services.sample()

    children_latency = [
        max(timeline.seen[c] for c in wanted[n]) - timeline.added[n]
        for n in names
        if n in timeline.added and all(c in timeline.seen for c in wanted[n])
    ]
    init_latency = [timeline.initialized[n] - timeline.added[n] for n in names if n in timeline.initialized]
    return {
        "n": len(names),
        "complete": len(children_latency),
        "initialized": len(init_latency),
        "timed_out": timed_out,
        "children_p50": percentile(children_latency, 0.5),
        "children_p99": percentile(children_latency, 0.99),
        "init_p50": percentile(init_latency, 0.5),
        "init_p99": percentile(init_latency, 0.99),
        "total": finished - started,
        "mean": statistics.fmean(init_latency) if init_latency else float("nan"),
        "usage": {
            p.label: (p.cpu_seconds() - cpu_before[p.label], p.peak_rss_kib / 1024)
            for p in services.services.values()
        },
    }


def run_size(kube: KubeEnv, n: int, work: Path, limit: float) -> JSON:
    namespace = f"bench-{n}-{uuid.uuid4().hex[:6]}"
    kube.kubectl_run("create", "namespace", namespace)
    nats_dir = work / f"nats-{n}"
    server = NatsServer(find_binaries().nats_server, nats_dir / "store", nats_dir / "logs")
    server.start()
    env = {
        **kube.env,
        "FERRY_NATS_URL": server.url,
        "FERRY_WATCH_NAMESPACE": namespace,
        "FERRY_LOG_LEVEL": "WARNING",
    }
    services = ServiceSet(work / f"logs-{n}", env)
    try:
        services.start(PIPELINE)
        cluster = Cluster(kube, namespace)
        names = [f"m{i:04d}" for i in range(n)]
        return asyncio.run(measure(namespace, names, cluster, services, limit))
    finally:
        services.stop()
        server.stop()
        kube.kubectl_run("delete", "namespace", namespace, "--wait=false", check=False)


def print_table(results: list[JSON]) -> None:
    print()
    print("apply -> all children stored / -> Initialized (seconds)")
    print(f"{'N':>5} {'done':>9} {'children p50':>13} {'p99':>7} {'Init p50':>9} {'p99':>7} {'total s':>8}")
    for r in results:
        done = f"{r['initialized']}/{r['n']}" + ("!" if r["timed_out"] else "")
        print(
            f"{r['n']:>5} {done:>9} {r['children_p50']:>13.2f} {r['children_p99']:>7.2f} "
            f"{r['init_p50']:>9.2f} {r['init_p99']:>7.2f} {r['total']:>8.1f}"
        )
    print()
    print("CPU seconds used during the run (start-up excluded) / peak RSS MiB, per service")
    labels = list(results[0]["usage"]) if results else []
    print(f"{'N':>5} " + " ".join(f"{label:>18}" for label in labels))
    for r in results:
        cells = [f"{r['usage'][lb][0]:7.1f}s {r['usage'][lb][1]:6.0f}M" for lb in labels]
        print(f"{r['n']:>5} " + " ".join(f"{c:>18}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.reconcile", description=__doc__.split("\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1, 50, 500])
    parser.add_argument("--limit", type=float, default=900.0, help="seconds to wait per size")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-reconcile-", dir=state_dir()))
    stack: LocalStack | None = None
    if kubeconfig := os.environ.get("KUBECONFIG"):
        kube = KubeEnv(Path(kubeconfig), kubernetes_bin_dir() / "kubectl", "", {"KUBECONFIG": kubeconfig})
    else:
        stack = LocalStack(work / "stack", with_nats=False)
        info = stack.start()
        kube = KubeEnv(
            Path(info.kubeconfig), Path(info.kubectl), info.server, {"KUBECONFIG": info.kubeconfig}
        )
        os.environ["KUBECONFIG"] = info.kubeconfig  # the in-process watch client reads it too
    info_for_crds = StackInfo(state_dir="", kubeconfig=str(kube.kubeconfig), kubectl=str(kube.kubectl),
                              server="", nats_url="", nats_monitor="", etcd_url="")  # fmt: skip
    install_crds(info_for_crds)
    results = []
    try:
        for n in args.sizes:
            print(f"==> {n} boosters", flush=True)
            results.append(run_size(kube, n, work, args.limit))
            print_table(results)
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
