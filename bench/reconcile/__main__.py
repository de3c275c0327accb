"""Reconcile benchmark: apply N ModelBoosters with the pipeline running and measure.

    uv run python -m bench.reconcile                    # N = 1, 50, 200, 500; over 1 and 10 namespaces
    uv run python -m bench.reconcile 1 50 --spread 1    # chosen sizes, one namespace
    uv run python -m bench.reconcile 2000 --spread 1    # the opt-in large size

Uses the stack named by ``KUBECONFIG`` when set, otherwise starts a local stack (and stops it).
Each size runs in a fresh namespace against a fresh nats-server and freshly started services.
Latencies are measured from the moment a watch on the API server sees the booster ADDED to
(a) every child stored — ModelServing, ModelServer, ModelRoute, the pod and the PodGroup — and
(b) the booster's ``Initialized`` condition turning True. CPU seconds and peak RSS come from
``/proc`` of each service process; API-server requests by verb and resource from kube-apiserver's
own ``apiserver_request_total`` (read before the create and when everything is done; the
benchmark's own booster creates are left out). A benchmark, not a test: it prints figures and
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource as rusage
import shutil
import statistics
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry_local.binaries import find_binaries, kubernetes_bin_dir
from ferry_local.natsd import NatsServer
from ferry_local.paths import state_dir
from ferry_local.stack import LocalStack, StackInfo, install_crds
from ferry_schemas import labels as L
from ferry_schemas.runtime import kubeconn
from ferry_schemas.runtime.kubeconn import ApiError, KubeConnection
from ferry_schemas.runtime.spans import read_spans
from ferry_watcher.kube import list_objects, watch_events

from bench.reconcile.stages import booster_stages, print_stages
from bench.router.run import reference_loop_us
from tests.conftest import KubeEnv
from tests.support.apimetrics import RequestKey, delta, request_counts
from tests.support.cluster import Cluster, booster
from tests.support.services import PIPELINE, ServiceSet, process_cpu_seconds

JSON = dict[str, Any]
CHILD_PATHS = {  # every namespace: the benchmark's stack holds only its own objects
    "ModelServing": f"/apis/{L.WORKLOAD_API_VERSION}/modelservings",
    "ModelServer": f"/apis/{L.NETWORKING_API_VERSION}/modelservers",
    "ModelRoute": f"/apis/{L.NETWORKING_API_VERSION}/modelroutes",
    "PodGroup": f"/apis/{L.PODGROUP_API_VERSION}/podgroups",
    "Pod": "/api/v1/pods",
}
BOOSTERS_PATH = f"/apis/{L.WORKLOAD_API_VERSION}/modelboosters"
BENCH_REQUESTS = {("POST", "modelboosters")}
"""Requests the benchmark itself makes while measuring (its creates); not counted as Ferry's."""
IN_FLIGHT = 32
"""Booster creates in flight at once over one connection pool (kubectl creates one at a time)."""
GENERATORS = ("pool", "kubectl")
"""How the boosters are created: ``pool`` POSTs ``--in-flight`` at once; ``kubectl`` runs
``kubectl create -f`` of one List, one POST after the other — the generator issue 9's Kthena and
Ferry figures were measured with (the first bench, 12a8e96)."""
RETRIED = {429, 500, 503, 504}
"""Answers a create is retried on (API Priority and Fairness rejecting, the server busy)."""
GC_PROBE_LIMIT = 120.0
"""Seconds to wait for the garbage collector to follow the owners of Ferry's children."""
NAMESPACE_DELETE_LIMIT = 600.0
"""Seconds to wait for a benchmark namespace to be gone before the next size starts."""
EVENTS_SETTLE = 5.0
EVENTS_DRAIN_LIMIT = 60.0
"""After the run: Event writes are counted once none came for EVENTS_SETTLE s (at most this long)."""


async def create_all(api: KubeConnection, items: list[JSON], in_flight: int) -> None:
    """POST every booster, ``in_flight`` at a time over ``api``'s one connection pool.

    ``kubectl create -f`` of a List POSTs one object after the other and waits for each answer, so
    at a few hundred boosters the run measured kubectl's round trips, not Ferry. A 409 (already
    there) counts as created; a busy answer (429/5xx) is retried after a short pause.
    """
    gate = asyncio.Semaphore(in_flight)

    async def create(obj: JSON) -> None:
        async with gate:
            path = f"/apis/{L.WORKLOAD_API_VERSION}/namespaces/{obj['metadata']['namespace']}/modelboosters"
            for attempt in range(20):
                try:
                    (await api.request("POST", path, body=json.dumps(obj).encode())).release()
                    return
                except ApiError as error:
                    if error.status == 409:
                        return
                    if error.status not in RETRIED or attempt == 19:
                        raise
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt))

    await asyncio.gather(*(create(obj) for obj in items))


async def kubectl_create(kube: KubeEnv, items: list[JSON], limit: float) -> None:
    """``kubectl create -f -`` of one List: one POST after the other, each waiting for its answer."""
    listing = {"apiVersion": "v1", "kind": "List", "items": items}
    await asyncio.to_thread(kube.kubectl_run, "create", "-f", "-", input=json.dumps(listing), timeout=limit)


def create_namespaces(kube: KubeEnv, prefix: str, spread: int) -> list[str]:
    """``prefix`` for one namespace, ``prefix-0`` … for several; each created."""
    namespaces = [prefix] if spread == 1 else [f"{prefix}-{i}" for i in range(spread)]
    for namespace in namespaces:
        kube.kubectl_run("create", "namespace", namespace)
    return namespaces


def boosters_over(names: list[str], namespaces: list[str]) -> list[JSON]:
    """One booster per name, dealt over ``namespaces`` in turn."""
    return [booster(n, namespaces[i % len(namespaces)]) for i, n in enumerate(names)]


async def generate(
    api: KubeConnection, kube: KubeEnv, items: list[JSON], generator: str, in_flight: int, limit: float
) -> None:
    """Store ``items`` with the chosen generator; returns once the API server has answered every create."""
    if generator == "kubectl":
        await kubectl_create(kube, items, limit)
    else:
        await asyncio.wait_for(create_all(api, items, in_flight), timeout=limit)


def store_alone(
    kube: KubeEnv, names: list[str], run: str, spread: int, generator: str, in_flight: int, limit: float
) -> float:
    """Seconds the generator takes to store the boosters with no controller running: the floor under
    the run's total (the same creates, the same CEL validation, nothing else competing for the cores)."""
    namespaces = create_namespaces(kube, f"{run}-alone", spread)
    items = boosters_over(names, namespaces)

    async def timed() -> float:
        api = await kubeconn.connect()
        try:
            started = time.monotonic()
            await generate(api, kube, items, generator, in_flight, limit)
            return time.monotonic() - started
        finally:
            await api.close()

    try:
        return asyncio.run(timed())
    finally:
        for namespace in namespaces:
            delete_namespace(kube, namespace)


def gc_probes(namespace: str) -> list[JSON]:
    """A ModelBooster and a ModelServing owned by a ConfigMap that never existed."""
    dangling = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": str(uuid.uuid4())}]
    serving = {
        "apiVersion": L.WORKLOAD_API_VERSION,
        "kind": "ModelServing",
        "metadata": {"name": "gc-probe", "namespace": namespace},
        "spec": {
            "template": {
                "roles": [
                    {
                        "name": "leader",
                        "workerReplicas": 0,
                        "entryTemplate": {"spec": {"containers": [{"name": "c", "image": "probe"}]}},
                    }
                ]
            }
        },
    }
    probes = [booster("gc-probe", namespace), serving]
    for probe in probes:
        probe["metadata"]["ownerReferences"] = dangling
    return probes


def delete_namespace(kube: KubeEnv, namespace: str, limit: float = NAMESPACE_DELETE_LIMIT) -> None:
    """Delete ``namespace`` and wait until it is gone: the namespace controller and the garbage
    collector emptying it (a LIST and a DELETE of every kind, a cascade of deletes) would otherwise
    be counted in the next size's API requests and kube-apiserver CPU."""
    kube.kubectl_run(
        "delete", "namespace", namespace, "--wait=true", f"--timeout={limit:.0f}s",
        check=False, timeout=limit + 10,
    )  # fmt: skip


def wait_for_garbage_collector(kube: KubeEnv, limit: float = GC_PROBE_LIMIT) -> float:
    """Wait until the garbage collector follows ModelBoosters and ModelServings (the owners of every
    child Ferry creates); the seconds waited.

    On a new stack it starts following freshly installed CRDs only at its next discovery (every
    30 s); until then each child a burst creates makes it GET the child's owner, 0 to 2 GETs per
    booster from run to run, and those GETs and its catching up were counted as Ferry's. A cluster's
    collector follows them long before. It deletes an object whose owner does not exist once it
    follows that object's kind: one probe of each kind, owned by a ConfigMap that never existed.
    """
    started = time.monotonic()
    namespace = f"bench-gc-{uuid.uuid4().hex[:6]}"
    kube.kubectl_run("create", "namespace", namespace)
    try:
        probes = gc_probes(namespace)
        kube.kubectl_run(
            "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": probes})
        )
        names = [f"{p['kind'].lower()}/{p['metadata']['name']}" for p in probes]
        while time.monotonic() - started < limit:
            left = kube.kubectl_run("get", *names, "-n", namespace, "-o", "name", "--ignore-not-found")
            if not left.stdout.strip():
                break
            time.sleep(1.0)
    finally:
        delete_namespace(kube, namespace)
    return time.monotonic() - started


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
    """List then watch ``path`` until ``stop``; ``on_object(type, obj)`` for everything seen.

    A watch the server closes (``timeoutSeconds``) is resumed from the last resourceVersion seen
    (bookmarks included), as an informer does; only a failed or expired (410) watch lists again. A
    LIST every minute would be counted among Ferry's requests and cost the run's cores (at 2000
    boosters, six kinds of up to 2,000 objects each).
    """
    rv: str | None = None
    while not stop.is_set():
        try:
            if rv is None:
                items, rv = await list_objects(api, path, None)
                for obj in items:
                    on_object("ADDED", obj)
            async for event in watch_events(api, path, None, rv, 60):
                rv = event["object"]["metadata"].get("resourceVersion") or rv
                if event.get("type") in ("ADDED", "MODIFIED"):
                    on_object(event["type"], event["object"])
                if stop.is_set():
                    return
        except (ApiError, OSError, TimeoutError):
            rv = None
            await asyncio.sleep(0.5)


def event_writes(counts: Any) -> int:
    return sum(v for (_, res), v in counts.items() if res == "events")


async def drain_events(cluster: Cluster, limit: float = EVENTS_DRAIN_LIMIT) -> tuple[int, float]:
    """Wait until the API server stops receiving Event writes (the recorders write in the background,
    so at ``done`` some are still queued); the Event write count then, and the seconds waited."""
    started = time.monotonic()
    last = event_writes(await asyncio.to_thread(request_counts, cluster.kube))
    quiet_since = time.monotonic()
    while time.monotonic() - started < limit and time.monotonic() - quiet_since < EVENTS_SETTLE:
        await asyncio.sleep(1.0)
        now = event_writes(await asyncio.to_thread(request_counts, cluster.kube))
        if now != last:
            last, quiet_since = now, time.monotonic()
    return last, time.monotonic() - started


async def events_by_reason(api: KubeConnection, namespaces: list[str]) -> dict[str, tuple[int, int]]:
    """``controller reason`` → (Event objects, occurrences: the sum of their series counts)."""
    found: dict[str, tuple[int, int]] = {}
    for namespace in namespaces:
        items, _ = await list_objects(api, f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", None)
        for event in items:
            key = f"{event.get('reportingController') or '?'} {event.get('reason') or '?'}"
            objects, occurrences = found.get(key, (0, 0))
            count = int((event.get("series") or {}).get("count") or event.get("deprecatedCount") or 1)
            found[key] = (objects + 1, occurrences + count)
    return found


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def own_cpu_seconds() -> float:
    """CPU of the benchmark itself (its creates and watches) and of the children it waited for."""
    cpu = 0.0
    for who in (rusage.RUSAGE_SELF, rusage.RUSAGE_CHILDREN):
        usage = rusage.getrusage(who)
        cpu += usage.ru_utime + usage.ru_stime
    return cpu


def nats_messages(monitor: str) -> dict[str, tuple[int, int]]:
    """Messages each client connection (by name) sent to and received from nats-server (``/connz``):
    publishes, requests (KV, last-message reads, fetches) and acks out; deliveries and replies in."""
    with urllib.request.urlopen(f"{monitor}/connz?limit=1024", timeout=5) as resp:
        connections = json.load(resp).get("connections") or []
    counts: dict[str, tuple[int, int]] = {}
    for conn in connections:
        sent, received = counts.get(conn.get("name") or "?", (0, 0))
        counts[conn.get("name") or "?"] = (sent + conn.get("in_msgs", 0), received + conn.get("out_msgs", 0))
    return counts


def infrastructure_cpu(infrastructure: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of the processes that are not Ferry's (label → pid), and of the bench."""
    return {
        **{label: process_cpu_seconds(pid) for label, pid in infrastructure.items()},
        "bench": own_cpu_seconds(),
    }


async def measure(
    namespaces: list[str],
    names: list[str],
    cluster: Cluster,
    services: ServiceSet,
    limit: float,
    infrastructure: dict[str, int],
    nats_monitor: str,
    in_flight: int = IN_FLIGHT,
    generator: str = "pool",
) -> JSON:
    api = await kubeconn.connect()
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
        if obj["metadata"].get("namespace") not in namespaces:
            return
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

    tasks = [asyncio.create_task(follow(api, BOOSTERS_PATH, on_booster, stop))]
    tasks += [
        asyncio.create_task(follow(api, path, on_child(kind), stop)) for kind, path in CHILD_PATHS.items()
    ]
    await asyncio.sleep(1.0)  # watches established
    items = boosters_over(names, namespaces)
    cpu_before = {p.label: p.cpu_seconds() for p in services.services.values()}
    infrastructure_before = infrastructure_cpu(infrastructure)
    requests_before = await asyncio.to_thread(request_counts, cluster.kube)
    messages_before = await asyncio.to_thread(nats_messages, nats_monitor)
    started = time.monotonic()

    async def sample() -> None:
        while not timeline.done.is_set():
            services.sample()
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    # create (one POST per object, no read first, IN_FLIGHT at once, or kubectl's one at a time);
    # the watch stamps each booster as it is stored
    await generate(api, cluster.kube, items, generator, in_flight, limit)
    timed_out = False
    try:
        await asyncio.wait_for(timeline.done.wait(), timeout=limit)
    except TimeoutError:
        timed_out = True
    finished = time.monotonic()
    infrastructure_after = infrastructure_cpu(infrastructure)
    requests = delta(await asyncio.to_thread(request_counts, cluster.kube), requests_before)
    messages_after = await asyncio.to_thread(nats_messages, nats_monitor)
    before_drain = event_writes(requests_before)
    drained, drain_seconds = await drain_events(cluster)
    by_reason = await events_by_reason(api, namespaces)
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
    pod_times = sorted(t for key, t in timeline.seen.items() if key.startswith("Pod/"))
    first_added = min(timeline.added.values(), default=started)
    pods_per_second = len(pod_times) / (pod_times[-1] - first_added) if len(pod_times) > 1 else float("nan")
    epoch = time.time() - time.monotonic()  # the spans' clock
    return {
        "n": len(names),
        # per booster, when it was stored and when its last child was (for the stage breakdown)
        "added": {n: t + epoch for n, t in timeline.added.items()},
        "done": {
            n: max(timeline.seen[c] for c in wanted[n]) + epoch
            for n in names
            if all(c in timeline.seen for c in wanted[n])
        },
        "complete": len(children_latency),
        "initialized": len(init_latency),
        "timed_out": timed_out,
        "children_p50": percentile(children_latency, 0.5),
        "children_p99": percentile(children_latency, 0.99),
        "init_p50": percentile(init_latency, 0.5),
        "init_p99": percentile(init_latency, 0.99),
        "total": finished - started,
        "namespaces": len(namespaces),
        "pods_per_second": pods_per_second,
        # how long the API server took to store all N boosters (the bench's creates): nothing
        # downstream can finish before the last booster exists
        "created": max(timeline.added.values(), default=started) - first_added,
        "requests": {k: v for k, v in requests.items() if k not in BENCH_REQUESTS},
        "mean": statistics.fmean(init_latency) if init_latency else float("nan"),
        "usage": {
            p.label: (p.cpu_seconds() - cpu_before[p.label], p.peak_rss_kib / 1024)
            for p in services.services.values()
        },
        "nats": {
            name: (
                sent - messages_before.get(name, (0, 0))[0],
                received - messages_before.get(name, (0, 0))[1],
            )
            for name, (sent, received) in messages_after.items()
        },
        "infrastructure": {
            label: infrastructure_after[label] - infrastructure_before[label]
            for label in infrastructure_after
        },
        "event_writes_drained": drained - before_drain,
        "event_drain_seconds": drain_seconds,
        "events_by_reason": by_reason,
    }


def run_size(
    kube: KubeEnv,
    n: int,
    spread: int,
    work: Path,
    limit: float,
    infrastructure: dict[str, int],
    in_flight: int = IN_FLIGHT,
    trace: bool = True,
    generator: str = "pool",
    alone: bool = False,
) -> JSON:
    run = f"bench-{n}-{uuid.uuid4().hex[:6]}"
    names = [f"m{i:04d}" for i in range(n)]
    alone_seconds = store_alone(kube, names, run, spread, generator, in_flight, limit) if alone else None
    namespaces = create_namespaces(kube, run, spread)
    nats_dir = work / f"nats-{run}"
    server = NatsServer(find_binaries().nats_server, nats_dir / "store", nats_dir / "logs")
    nats_process = server.start()
    env = {
        **kube.env,
        "FERRY_NATS_URL": server.url,
        # one namespace: the services watch only it; several: they watch every namespace
        "FERRY_WATCH_NAMESPACE": run if spread == 1 else "",
        "FERRY_LOG_LEVEL": os.environ.get("FERRY_LOG_LEVEL", "WARNING"),
    }
    spans = work / f"spans-{run}.jsonl"
    if trace:
        env["FERRY_TRACE_FILE"] = str(spans)
    services = ServiceSet(work / f"logs-{run}", env)
    try:
        services.start(PIPELINE)
        cluster = Cluster(kube, namespaces[0])
        measured = {**infrastructure, "nats-server": nats_process.pid}
        result = asyncio.run(
            measure(
                namespaces, names, cluster, services, limit, measured, server.monitor, in_flight, generator
            )
        )
    finally:
        services.stop()
        server.stop()
        for namespace in namespaces:
            delete_namespace(kube, namespace)
    # the services are stopped: every span is in the file
    added, done = result.pop("added"), result.pop("done")
    result["stages"] = booster_stages(read_spans(spans), added, done) if trace else {}
    result["alone"] = alone_seconds
    return result


def print_table(results: list[JSON]) -> None:
    print()
    print(
        "apply -> all children stored / -> Initialized (seconds); pods created per second; "
        "seconds from the first booster stored to the last; alone: the same creates with no controller"
    )
    print(
        f"{'N':>5} {'ns':>3} {'done':>9} {'children p50':>13} {'p99':>7} {'Init p50':>9} {'p99':>7} "
        f"{'total s':>8} {'pods/s':>7} {'created s':>10} {'alone s':>8}"
    )
    for r in results:
        done = f"{r['initialized']}/{r['n']}" + ("!" if r["timed_out"] else "")
        print(
            f"{r['n']:>5} {r['namespaces']:>3} {done:>9} {r['children_p50']:>13.2f} "
            f"{r['children_p99']:>7.2f} {r['init_p50']:>9.2f} {r['init_p99']:>7.2f} {r['total']:>8.1f} "
            f"{r['pods_per_second']:>7.1f} {r['created']:>10.1f} "
            + (f"{r['alone']:>8.1f}" if r["alone"] is not None else f"{'-':>8}")
        )
    print()
    print("CPU seconds used during the run (start-up excluded) / peak RSS MiB, per service")
    labels = list(results[0]["usage"]) if results else []
    print(f"{'N':>5} {'ns':>3} " + " ".join(f"{label:>18}" for label in labels) + f" {'CPU s/booster':>14}")
    for r in results:
        cells = [f"{r['usage'][lb][0]:7.1f}s {r['usage'][lb][1]:6.0f}M" for lb in labels]
        per_booster = sum(r["usage"][lb][0] for lb in labels) / max(1, r["n"])
        print(
            f"{r['n']:>5} {r['namespaces']:>3} "
            + " ".join(f"{c:>18}" for c in cells)
            + f" {per_booster:>14.3f}"
        )
    print()
    print(
        "CPU seconds used during the run by what is not Ferry (bench: its own creates and watches); "
        "cores busy: everyone's CPU seconds over the total"
    )
    others = list(results[0]["infrastructure"]) if results else []
    print(f"{'N':>5} {'ns':>3} " + " ".join(f"{label:>23}" for label in others) + f" {'cores busy':>11}")
    for r in results:
        everyone = sum(r["infrastructure"].values()) + sum(cpu for cpu, _ in r["usage"].values())
        print(
            f"{r['n']:>5} {r['namespaces']:>3} "
            + " ".join(f"{r['infrastructure'][label]:>22.1f}s" for label in others)
            + f" {everyone / max(r['total'], 1e-9):>11.2f}"
        )
    print_requests(results)
    print_events(results)
    print_nats(results)
    for r in results:
        if r["stages"]:
            print_stages(r["stages"], r["n"], r["namespaces"])


def print_events(results: list[JSON]) -> None:
    """Event writes once the recorders are drained, and the Events stored by controller and reason."""
    heads = [f"N={r['n']}/{r['namespaces']}ns" for r in results]
    print()
    print(
        "Events per booster once the recorders are drained (writes: POST + PATCH; then Event objects "
        "/ occurrences by reason)"
    )
    print(f"{'':<44} " + " ".join(f"{h:>15}" for h in heads))
    writes = [f"{r['event_writes_drained'] / max(1, r['n']):.2f}" for r in results]
    print(f"{'writes (drained after ' + 'done)':<44} " + " ".join(f"{w:>15}" for w in writes))
    waited = [f"{r['event_drain_seconds']:.0f}s" for r in results]
    print(f"{'  drain waited':<44} " + " ".join(f"{w:>15}" for w in waited))
    reasons = sorted({k for r in results for k in r["events_by_reason"]})
    for reason in reasons:
        cells = []
        for r in results:
            objects, occurrences = r["events_by_reason"].get(reason, (0, 0))
            cells.append(f"{objects / max(1, r['n']):.2f} / {occurrences / max(1, r['n']):.2f}")
        print(f"{reason:<44} " + " ".join(f"{c:>15}" for c in cells))


def print_nats(results: list[JSON]) -> None:
    """NATS messages per booster by client connection, sent / received, one column per run."""
    names = sorted({name for r in results for name in r["nats"]})
    heads = [f"N={r['n']}/{r['namespaces']}ns" for r in results]
    print()
    print("NATS messages per booster by connection, sent / received (nats-server /connz)")
    print(f"{'connection':<28} " + " ".join(f"{h:>15}" for h in heads))
    for name in names:
        cells = []
        for r in results:
            sent, received = r["nats"].get(name, (0, 0))
            cells.append(f"{sent / max(1, r['n']):.1f} / {received / max(1, r['n']):.1f}")
        print(f"{name:<28} " + " ".join(f"{c:>15}" for c in cells))


def print_requests(results: list[JSON]) -> None:
    """API-server requests per booster by verb and resource (Events apart), one column per run."""
    keys: set[RequestKey] = set()
    for r in results:
        keys.update(r["requests"])
    rows = sorted(keys, key=lambda k: (k[1] == "events", k[1], k[0]))
    heads = [f"N={r['n']}/{r['namespaces']}ns" for r in results]
    print()
    print("API-server requests per booster (apiserver_request_total, the benchmark's own creates left out)")
    print(f"{'verb':>8} {'resource':<34} " + " ".join(f"{h:>13}" for h in heads))
    for verb, resource in rows:
        cells = [r["requests"].get((verb, resource), 0) / max(1, r["n"]) for r in results]
        print(f"{verb:>8} {resource:<34} " + " ".join(f"{c:>13.2f}" for c in cells))

    def total(r: JSON, events: bool) -> float:
        return sum(v for (_, res), v in r["requests"].items() if (res == "events") == events) / max(1, r["n"])

    print(f"{'':>8} {'total without Events':<34} " + " ".join(f"{total(r, False):>13.2f}" for r in results))
    print(f"{'':>8} {'Events':<34} " + " ".join(f"{total(r, True):>13.2f}" for r in results))
    lists = [
        sum(v for (verb, _), v in r["requests"].items() if verb == "LIST") / max(1, r["n"]) for r in results
    ]
    print(f"{'':>8} {'of which LIST':<34} " + " ".join(f"{x:>13.2f}" for x in lists))


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.reconcile", description=__doc__.split("\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1, 50, 200, 500])
    parser.add_argument(
        "--spread", nargs="*", type=int, default=[1, 10], help="namespaces to spread each size over"
    )
    parser.add_argument("--limit", type=float, default=900.0, help="seconds to wait per size")
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT, help="booster creates in flight at once")
    parser.add_argument(
        "--generator",
        choices=GENERATORS,
        default="pool",
        help="pool: POST --in-flight boosters at once; kubectl: `kubectl create -f` of one List (issue 9's)",
    )
    parser.add_argument(
        "--alone",
        action="store_true",
        help="before each run, time the same creates with no controller running (the floor under the total)",
    )
    parser.add_argument(
        "--no-stages",
        action="store_true",
        help="no span file (the services then spend nothing on writing spans), no stage breakdown",
    )
    args = parser.parse_args()
    print(
        f"==> this machine: reference loop {reference_loop_us():.1f} us (8-10 on an idle modern core), "
        f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-reconcile-", dir=state_dir()))
    stack: LocalStack | None = None
    infrastructure: dict[str, int] = {}
    """label → pid of the non-Ferry processes whose CPU is reported (the local stack's, when started)."""
    if kubeconfig := os.environ.get("KUBECONFIG"):
        kube = KubeEnv(Path(kubeconfig), kubernetes_bin_dir() / "kubectl", "", {"KUBECONFIG": kubeconfig})
    else:
        stack = LocalStack(work / "stack", with_nats=False)
        info = stack.start()
        kube = KubeEnv(
            Path(info.kubeconfig), Path(info.kubectl), info.server, {"KUBECONFIG": info.kubeconfig}
        )
        os.environ["KUBECONFIG"] = info.kubeconfig  # the in-process watch client reads it too
        infrastructure = {p.name: p.pid for p in info.processes}
    info_for_crds = StackInfo(state_dir="", kubeconfig=str(kube.kubeconfig), kubectl=str(kube.kubectl),
                              server="", nats_url="", nats_monitor="", etcd_url="")  # fmt: skip
    install_crds(info_for_crds)
    print(
        f"==> the garbage collector follows Ferry's kinds ({wait_for_garbage_collector(kube):.0f} s)",
        flush=True,
    )
    results = []
    try:
        for n in args.sizes:
            for spread in args.spread:
                if spread > n:
                    continue
                print(f"==> {n} boosters over {spread} namespace(s)", flush=True)
                results.append(
                    run_size(
                        kube,
                        n,
                        spread,
                        work,
                        args.limit,
                        infrastructure,
                        args.in_flight,
                        not args.no_stages,
                        args.generator,
                        args.alone,
                    )
                )
                print_table(results)  # after every run: a long run shows its figures as it goes
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
