"""Autoscaling benchmark: a load step and scale from zero, on the local stack with every service.

    uv run python bench/autoscale/run.py [--clients 6] [--sync-period 1] [--cold-starts 3]

1. **Load step 0 → N clients.** A booster (min 1, max 6, ``vllm:num_requests_running`` target 2,
   scale-up 4 instances per 1 s period, no stabilisation) receives N concurrent chat streams through
   the router with the official ``openai`` client. Measured from the step: the first scale decision
   (``spec.replicas`` changes), the moment every new replica has served a request (each new engine's
   ``vllm:request_success_total`` > 0), and the overshoot (peak replicas - ceil(N / target)).
2. **Scale from zero.** A ``minReplicas: 0`` booster idles at zero; one chat is sent and its latency
   split into *decision* (sent → ``spec.replicas`` = 1, i.e. router demand → autoscaler write),
   *pod start* (→ the pod bound and its engine started: phase Running), *engine ready* (→ pod Ready,
   the router can route) and the rest (routing + answer). Repeated after it idles back to zero.

Also printed: the autoscaler's mean cycle time (scrape + decide + write) from its own metrics. Uses
the stack named by ``KUBECONFIG`` when set, otherwise starts one (and stops it). A benchmark, not a
test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ferry_local.binaries import find_binaries, kubernetes_bin_dir
from ferry_local.natsd import NatsServer
from ferry_local.paths import state_dir
from ferry_local.stack import LocalStack, StackInfo, install_crds, kubectl
from ferry_local.system import SystemInfo, start_system
from kubernetes_asyncio import client, config
from openai import OpenAI

JSON = dict[str, Any]
TARGET = 2
CHAT = [{"role": "user", "content": "tell me a story"}]


def chat() -> list[dict[str, str]]:
    """A distinct prompt per request: identical prompts would all go to the engine holding their
    prefix (the router's prefix-cache scoring), which is not the load an autoscaler spreads."""
    return [{"role": "user", "content": f"tell me story {uuid.uuid4().hex}"}]


def booster(name: str, namespace: str, low: int, high: int, itl: str) -> JSON:
    behavior = {
        "scaleUp": {
            "stablePolicy": {"instances": 4, "percent": 100, "period": "1s", "stabilizationWindow": "0s"}
        },
        "scaleDown": {"instances": 6, "percent": 100, "period": "1s", "stabilizationWindow": "3s"},
    }
    worker = {
        "type": "server", "image": "vllm/vllm-openai:latest", "replicas": 1, "pods": 1,
        "config": {"served-model-name": name, "inter-token-latency": itl},
    }  # fmt: skip
    return {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelBooster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "autoscalingPolicy": {
                "metrics": [{"metricName": "vllm:num_requests_running", "targetValue": TARGET}],
                "tolerancePercent": 0,
                "behavior": behavior,
            },
            "backend": {
                "name": "cpu",
                "type": "vLLM",
                "modelURI": "hf://Qwen/Qwen2.5-0.5B-Instruct",
                "cacheURI": "hostpath://tmp/cache",
                "minReplicas": low,
                "maxReplicas": high,
                "workers": [worker],
            },
        },
    }


class Cluster:
    def __init__(self, info: StackInfo, namespace: str) -> None:
        self.info = info
        self.namespace = namespace

    def get(self, *what: str) -> JSON:
        out = kubectl(self.info, "-n", self.namespace, "get", *what, "-o", "json")
        return dict(json.loads(out))

    def apply(self, obj: JSON) -> None:
        kubectl(self.info, "apply", "-f", "-", input=json.dumps(obj))

    def replicas(self, serving: str) -> int:
        try:
            return int(self.get("modelservings", serving)["spec"].get("replicas", 1))
        except Exception:
            return -1

    def pods(self, serving: str) -> list[JSON]:
        return list(self.get("pods", "-l", f"modelserving.volcano.sh/name={serving}")["items"])


def wait(check: Callable[[], Any], what: str, timeout: float = 180, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not seen within {timeout:.0f}s")


def served(pod: JSON) -> float:
    """``vllm:request_success_total`` of the pod's engine (0 when it does not answer yet)."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return 0.0
    try:
        with urllib.request.urlopen(f"http://{ip}:8000/metrics", timeout=1) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:request_success_total")
    )


def ready(pod: JSON) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def load_step(cluster: Cluster, system: SystemInfo, clients: int) -> JSON:
    name, serving = "step", "step-cpu"
    cluster.apply(booster(name, cluster.namespace, 1, 6, "50ms"))
    first = wait(lambda: [p for p in cluster.pods(serving) if ready(p)], "the first replica Ready")
    old = {p["metadata"]["name"] for p in first}
    chat_client = OpenAI(base_url=f"{system.router_url}/v1", api_key="bench", timeout=60, max_retries=0)
    wait(lambda: name in {m.id for m in chat_client.models.list().data}, "the route")
    stop = threading.Event()
    answered = [0]

    def loop() -> None:
        while not stop.is_set():
            try:
                chat_client.chat.completions.create(model=name, messages=chat(), max_tokens=40)
                answered[0] += 1
            except Exception:
                time.sleep(0.1)

    pool = ThreadPoolExecutor(clients)
    started = time.monotonic()
    for _ in range(clients):
        pool.submit(loop)
    timeline: list[tuple[float, int]] = []
    try:
        decided = wait(lambda: cluster.replicas(serving) > 1, "the first scale decision", 120)
        t_decision = time.monotonic() - started
        wanted = math.ceil(clients / TARGET)

        def new_ones_served() -> bool:
            count = cluster.replicas(serving)
            timeline.append((time.monotonic() - started, count))
            fresh = [p for p in cluster.pods(serving) if p["metadata"]["name"] not in old]
            return len(fresh) >= count - 1 and all(ready(p) and served(p) > 0 for p in fresh)

        wait(new_ones_served, "every new replica serving", 180, 0.2)
        t_serving = time.monotonic() - started
        settle_until = time.monotonic() + 10
        while time.monotonic() < settle_until:
            timeline.append((time.monotonic() - started, cluster.replicas(serving)))
            time.sleep(0.5)
    finally:
        stop.set()
        pool.shutdown(wait=True)
    peak = max(n for _, n in timeline) if timeline else decided
    return {
        "clients": clients, "wanted": wanted, "decision": t_decision, "serving": t_serving,
        "peak": peak, "overshoot": peak - wanted, "final": cluster.replicas(serving), "answered": answered[0],
    }  # fmt: skip


def watch_marks(
    kubeconfig: str, namespace: str, serving: str, marks: dict[str, float], done: threading.Event
) -> None:
    """Record when ``spec.replicas`` turned 1, the pod turned Running, and Ready (polled every 20 ms
    with an in-process client: a kubectl per poll would blur the split by its own start-up)."""
    asyncio.run(_watch(kubeconfig, namespace, serving, marks, done))


async def _watch(
    kubeconfig: str, namespace: str, serving: str, marks: dict[str, float], done: threading.Event
) -> None:
    await config.load_kube_config(config_file=kubeconfig)
    async with client.ApiClient() as api:
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        while not done.is_set():
            obj = await custom.get_namespaced_custom_object(
                "workload.serving.volcano.sh", "v1alpha1", namespace, "modelservings", serving
            )
            now = time.monotonic()
            if "decision" not in marks and int(obj["spec"].get("replicas", 1)) >= 1:
                marks["decision"] = now
            if "decision" in marks:
                listed = await core.list_namespaced_pod(
                    namespace, label_selector=f"modelserving.volcano.sh/name={serving}"
                )
                now = time.monotonic()
                pods = [api.sanitize_for_serialization(p) for p in listed.items]
                if pods and "pod" not in marks and (pods[0].get("status") or {}).get("phase") == "Running":
                    marks["pod"] = now
                if pods and "ready" not in marks and ready(pods[0]):
                    marks["ready"] = now
            await asyncio.sleep(0.02)


def cold_starts(cluster: Cluster, system: SystemInfo, times: int) -> list[JSON]:
    name, serving = "cold", "cold-cpu"
    cluster.apply(booster(name, cluster.namespace, 0, 2, "1ms"))
    chat_client = OpenAI(base_url=f"{system.router_url}/v1", api_key="bench", timeout=120, max_retries=0)
    wait(lambda: name in {m.id for m in chat_client.models.list().data}, "the route")
    results = []
    for _ in range(times):
        wait(lambda: cluster.replicas(serving) == 0 and not cluster.pods(serving), "idle at zero", 120, 0.5)
        marks: dict[str, float] = {}
        done = threading.Event()
        watcher = threading.Thread(
            target=watch_marks, args=(cluster.info.kubeconfig, cluster.namespace, serving, marks, done)
        )
        watcher.start()
        time.sleep(0.2)  # the poller is running before the request goes out
        sent = time.monotonic()
        answer = chat_client.chat.completions.create(model=name, messages=CHAT, max_tokens=4)
        total = time.monotonic() - sent
        done.set()
        watcher.join()
        assert answer.choices
        decision = marks.get("decision", sent) - sent
        pod = marks.get("pod", marks.get("decision", sent)) - marks.get("decision", sent)
        engine = marks.get("ready", sent + total) - marks.get("pod", sent)
        results.append({"total": total, "decision": decision, "pod": pod, "engine": engine,
                        "rest": total - decision - pod - engine})  # fmt: skip
    return results


def cycle_seconds(system: SystemInfo) -> tuple[float, int]:
    url = system.probes["autoscaler"].replace("/readyz", "/metrics")
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = {
        line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ferry_autoscaler_cycle_seconds_")
    }
    count = int(values.get("ferry_autoscaler_cycle_seconds_count", 0))
    return (values.get("ferry_autoscaler_cycle_seconds_sum", 0.0) / count if count else float("nan")), count


def row(cells: list[Any]) -> str:
    return " ".join(f"{c:>12.2f}" if isinstance(c, float) else f"{c!s:>12}" for c in cells)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/autoscale", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--sync-period", type=float, default=1.0, help="autoscaler cycle (Kthena: 15 s)")
    parser.add_argument("--cold-starts", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-autoscale-", dir=state_dir()))
    stack: LocalStack | None = None
    if os.environ.get("KUBECONFIG"):
        kubeconfig = os.environ["KUBECONFIG"]
        info = StackInfo(state_dir="", kubeconfig=kubeconfig, kubectl=str(kubernetes_bin_dir() / "kubectl"),
                         server="", nats_url="", nats_monitor="", etcd_url="")  # fmt: skip
    else:
        stack = LocalStack(work / "stack", with_nats=False)
        info = stack.start()
    install_crds(info)
    namespace = f"bench-autoscale-{uuid.uuid4().hex[:6]}"
    kubectl(info, "create", "namespace", namespace)
    nats = NatsServer(find_binaries().nats_server, work / "nats", work / "logs")
    nats.start()
    env = {
        "KUBECONFIG": info.kubeconfig,
        "FERRY_NATS_URL": nats.url,
        "FERRY_WATCH_NAMESPACE": namespace,
        "FERRY_LOG_LEVEL": "WARNING",
        "FERRY_AUTOSCALER_SYNC_PERIOD": str(args.sync_period),
        "FERRY_ROUTER_HOLD_TIMEOUT": "120s",
    }
    system = start_system(env, work / "logs", work / "spans.jsonl")
    cluster = Cluster(info, namespace)
    try:
        step = load_step(cluster, system, args.clients)
        colds = cold_starts(cluster, system, args.cold_starts)
        mean_cycle, cycles = cycle_seconds(system)
    finally:
        for process in reversed(system.processes):
            process.stop()
        nats.stop()
        kubectl(info, "delete", "namespace", namespace, "--wait=false")
        if stack is not None:
            stack.stop()
    print()
    print(f"load step 0 -> {step['clients']} clients, target {TARGET} running per replica, "
          f"sync period {args.sync_period:g}s")  # fmt: skip
    print(row(["first decision s", "new replicas serving s", "wanted", "peak", "overshoot", "answered"]))
    print(row([step[k] for k in ("decision", "serving", "wanted", "peak", "overshoot", "answered")]))
    print()
    print("scale from zero: the held request's latency split (seconds)")
    parts = ("decision", "pod", "engine", "rest", "total")
    print(row(["run", "decision", "pod start", "engine ready", "route+answer", "total"]))
    for i, c in enumerate(colds, 1):
        print(row([i, *(c[k] for k in parts)]))
    if colds:
        print(row(["p50", *(statistics.median(c[k] for c in colds) for k in parts)]))
    print()
    print(f"autoscaler cycle (scrape + decide + write), mean of {cycles}: {mean_cycle * 1000:.1f} ms")


if __name__ == "__main__":
    main()
