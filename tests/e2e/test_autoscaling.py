"""The autoscaler end to end on the local node: real engines, real router, the official openai client.

* a booster with an autoscaling policy (min 1, max 4) scales to >= 3 under load sent through the
  router and back to 1 when the load stops; a booster edit meanwhile does not reset the replicas;
* a disaggregated policy scales prefill and decode of a ModelServing within its ratio;
* a ``minReplicas: 0`` booster sits at zero; a chat sent then is held by the router, the autoscaler
  scales 0 -> 1 on the router's demand, and the chat is answered (cold start printed);
* a heterogeneous binding over two boosters' ModelServings splits one total by cost;
* ``kubectl scale`` works on a ModelServing no policy governs; on a booster's ModelServing it and a
  real HPA keep their replicas across booster edits and an applier restart.

Policy windows are shortened (seconds instead of minutes) and the autoscaler syncs every second.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from ferry_autoscaler.algorithm.optimizer import Backend, OptimizerPlan
from ferry_autoscaler.algorithm.recommendation import RecommendationInput, recommend
from ferry_local.natsd import NatsServer
from ferry_local.system import SystemInfo, start_service
from openai import OpenAI

from tests.conftest import KubeEnv
from tests.support.polling import eventually, get_json, has_condition

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKLOAD = "workload.serving.volcano.sh/v1alpha1"
FAST_BEHAVIOR = {
    "scaleUp": {
        "stablePolicy": {"instances": 4, "percent": 100, "period": "1s", "stabilizationWindow": "0s"}
    },
    "scaleDown": {"instances": 4, "percent": 100, "period": "1s", "stabilizationWindow": "4s"},
}
CHAT = [{"role": "user", "content": "tell me a story"}]


def chat() -> list[dict[str, str]]:
    """A distinct prompt per request: identical prompts would all go to the engine holding their
    prefix (the router's prefix-cache scoring), which is not the load an autoscaler spreads."""
    return [{"role": "user", "content": f"tell me story {uuid.uuid4().hex}"}]


FERRY_ENV = {"FERRY_AUTOSCALER_SYNC_PERIOD": "1", "FERRY_ROUTER_HOLD_TIMEOUT": "90s"}
"""Read by the ``ferry`` fixture: a cycle every second, cold starts may take up to 90 s."""


def booster(
    name: str, low: int, high: int, metric: str, target: int, *, itl: str = "100ms"
) -> dict[str, Any]:
    return {
        "apiVersion": WORKLOAD,
        "kind": "ModelBooster",
        "metadata": {"name": name},
        "spec": {
            "autoscalingPolicy": {
                "metrics": [{"metricName": metric, "targetValue": target}],
                "tolerancePercent": 0,
                "behavior": FAST_BEHAVIOR,
            },
            "backend": {
                "name": "cpu",
                "type": "vLLM",
                "modelURI": "hf://Qwen/Qwen2.5-0.5B-Instruct",
                "cacheURI": "hostpath://tmp/cache",
                "minReplicas": low,
                "maxReplicas": high,
                "workers": [
                    {
                        "type": "server",
                        "image": "vllm/vllm-openai:latest",
                        "replicas": 1,
                        "pods": 1,
                        "config": {
                            "served-model-name": name,
                            "inter-token-latency": itl,
                            "max-model-len": 2048,
                        },
                    }
                ],
            },
        },
    }


def apply(kube: KubeEnv, namespace: str, obj: dict[str, Any]) -> None:
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(obj))


def serving_of(kube: KubeEnv, namespace: str, name: str) -> dict[str, Any]:
    """The ModelServing, or ``{}`` while it does not exist yet."""
    done = kube.kubectl_run("-n", namespace, "get", "modelservings", name, "-o", "json", check=False)
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {}


def replicas(kube: KubeEnv, namespace: str, serving: str) -> int:
    return int((serving_of(kube, namespace, serving).get("spec") or {}).get("replicas", 1))


def ready_groups(kube: KubeEnv, namespace: str, serving: str) -> int:
    status = serving_of(kube, namespace, serving).get("status") or {}
    return int(status.get("availableReplicas") or 0)


class Load:
    """``clients`` threads each sending chats through the router with the official client until stopped."""

    def __init__(self, router_url: str, model: str, clients: int, max_tokens: int = 30) -> None:
        self.client = OpenAI(base_url=f"{router_url}/v1", api_key="test", timeout=60, max_retries=0)
        self.model = model
        self.clients = clients
        self.max_tokens = max_tokens
        self.stop = threading.Event()
        self.answered = 0
        self.failed: list[str] = []
        self._pool = ThreadPoolExecutor(clients)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.client.chat.completions.create(
                    model=self.model, messages=chat(), max_tokens=self.max_tokens
                )
                self.answered += 1
            except Exception as exc:
                self.failed.append(repr(exc))

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            self._pool.submit(self._loop)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self._pool.shutdown(wait=True)


def pods_of(kube: KubeEnv, namespace: str, serving: str) -> list[dict[str, Any]]:
    return list(get_json(kube, namespace, "pods", "-l", f"modelserving.volcano.sh/name={serving}")["items"])


def requests_served(pod: dict[str, Any]) -> float:
    """The engine's own count of finished requests (0 while it does not answer)."""
    ip = (pod.get("status") or {}).get("podIP")
    try:
        text = httpx.get(f"http://{ip}:8000/metrics", timeout=2).text if ip else ""
    except httpx.HTTPError:
        return 0.0
    lines = [line for line in text.splitlines() if line.startswith("vllm:request_success_total")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def events_for(kube: KubeEnv, namespace: str, name: str) -> list[dict[str, Any]]:
    items = get_json(kube, namespace, "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return list(items)


def test_booster_scales_up_under_load_and_back_down(
    ferry: SystemInfo, kube: KubeEnv, e2e_namespace: str
) -> None:
    ns, serving = e2e_namespace, "busy-cpu"
    apply(kube, ns, booster("busy", 1, 4, "vllm:num_requests_running", 2))
    eventually(lambda: ready_groups(kube, ns, serving) == 1, "the first serving group Ready", timeout=120)
    started = time.monotonic()
    with Load(ferry.router_url, "busy", clients=8) as load:
        scaled = eventually(
            lambda: replicas(kube, ns, serving) >= 3 and replicas(kube, ns, serving), "scale up to >= 3", 90
        )
        decided = time.monotonic() - started
        eventually(lambda: ready_groups(kube, ns, serving) >= 3, ">= 3 serving groups Ready", 120)
        eventually(
            lambda: sum(1 for p in pods_of(kube, ns, serving) if requests_served(p) > 0) >= 3,
            "the new replicas serving traffic",
            60,
        )
        serving_after = time.monotonic() - started
        print(
            f"\nscale-up: {scaled} replicas decided after {decided:.1f}s, serving after {serving_after:.1f}s"
        )

        # A booster edit that leaves min/max/policy alone keeps the autoscaler's replicas.
        before = replicas(kube, ns, serving)
        edit = [{"op": "replace", "path": "/spec/backend/workers/0/config/max-model-len", "value": 4096}]
        kube.kubectl_run("-n", ns, "patch", "modelbooster", "busy", "--type=json", "-p", json.dumps(edit))
        eventually(
            lambda: "4096" in json.dumps(get_json(kube, ns, "modelservings", serving)["spec"]["template"]),
            "the edit applied to the ModelServing",
            60,
        )
        assert replicas(kube, ns, serving) >= min(before, 3), "the booster edit reset the replicas"
        managers = {
            entry["manager"]
            for entry in get_json(kube, ns, "modelservings", serving, "--show-managed-fields")["metadata"][
                "managedFields"
            ]
            if "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
        }
        assert managers == {"ferry-autoscaler"}, managers
    assert load.answered > 0
    stopped = time.monotonic()
    eventually(lambda: replicas(kube, ns, serving) == 1, "scale back down to 1", 90)
    print(f"scale-down to 1: {time.monotonic() - stopped:.1f}s after the load stopped")

    # While the removed groups' pods terminate their metric group is dropped (ScalingActive False,
    # FailedGetMetrics, as Kthena does); the next cycle after they are gone measures again.
    def measuring_again() -> dict[str, Any] | None:
        found = get_json(kube, ns, "autoscalingpolicybindings", "busy")
        return found if has_condition(found, "ScalingActive") else None

    binding = eventually(measuring_again, "ScalingActive again once the removed pods are gone", 60)
    status = binding["status"]["homogeneousStatus"]
    assert status["name"] == f"{ns}/{serving}"
    assert {m["name"] for m in status["metrics"]} == {"vllm:num_requests_running"}
    assert has_condition(binding, "Ready")
    reasons = [
        e["reason"]
        for e in events_for(kube, ns, "busy")
        if e["involvedObject"]["kind"] == "AutoscalingPolicyBinding"
    ]
    assert "SuccessfulRescale" in reasons


def test_kubectl_scale_works_without_a_policy(ferry: SystemInfo, kube: KubeEnv, e2e_namespace: str) -> None:
    ns = e2e_namespace
    serving = {
        "apiVersion": WORKLOAD,
        "kind": "ModelServing",
        "metadata": {"name": "manual"},
        "spec": {
            "replicas": 1,
            "template": {
                "roles": [
                    {
                        "name": "leader",
                        "replicas": 1,
                        "workerReplicas": 0,
                        "entryTemplate": {
                            "metadata": {"labels": {"app": "manual"}},
                            "spec": {
                                "containers": [
                                    {
                                        "name": "engine",
                                        "image": "vllm/vllm-openai:latest",
                                        "command": ["vllm", "serve", "m", "--served-model-name", "manual"],
                                    }
                                ]
                            },
                        },
                    }
                ]
            },
        },
    }
    apply(kube, ns, serving)
    eventually(lambda: ready_groups(kube, ns, "manual") == 1, "one group Ready", 90)
    kube.kubectl_run("-n", ns, "scale", "modelserving", "manual", "--replicas=3")
    eventually(lambda: ready_groups(kube, ns, "manual") == 3, "three groups Ready after kubectl scale", 90)
    scale = json.loads(
        kube.kubectl_run(
            "-n", ns, "get", "--raw", f"/apis/{WORKLOAD}/namespaces/{ns}/modelservings/manual/scale"
        ).stdout
    )
    assert scale["spec"]["replicas"] == 3
    eventually(
        lambda: (
            json.loads(
                kube.kubectl_run(
                    "-n", ns, "get", "--raw", f"/apis/{WORKLOAD}/namespaces/{ns}/modelservings/manual/scale"
                ).stdout
            )["status"].get("replicas")
            == 3
        ),
        "status.replicas through /scale",
        30,
    )
    kube.kubectl_run("-n", ns, "scale", "modelserving", "manual", "--replicas=1")
    eventually(
        lambda: ready_groups(kube, ns, "manual") == 1 and len(pods_of(kube, ns, "manual")) == 1,
        "back to one group",
        90,
    )
    kube.kubectl_run("-n", ns, "delete", "modelserving", "manual")


def fixed_booster(name: str, replicas: int, *, itl: str = "1ms") -> dict[str, Any]:
    """A current-Kthena booster: a fixed ``replicas``, no autoscaling policy."""
    obj = booster(name, 1, 1, "vllm:num_requests_running", 1, itl=itl)
    del obj["spec"]["autoscalingPolicy"]
    backend = obj["spec"]["backend"]
    del backend["minReplicas"], backend["maxReplicas"]
    backend["replicas"] = replicas
    return obj


def replica_owners(kube: KubeEnv, namespace: str, serving: str) -> set[tuple[str, str]]:
    """``(manager, subresource)`` of every managedFields entry owning ``spec.replicas``."""
    meta = get_json(kube, namespace, "modelservings", serving, "--show-managed-fields")["metadata"]
    return {
        (entry["manager"], entry.get("subresource", ""))
        for entry in meta["managedFields"]
        if "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
    }


def edit_booster(kube: KubeEnv, namespace: str, name: str, path: str, value: Any) -> None:
    patch = [{"op": "replace", "path": path, "value": value}]
    kube.kubectl_run("-n", namespace, "patch", "modelbooster", name, "--type=json", "-p", json.dumps(patch))


def test_kubectl_scale_and_an_hpa_keep_their_replicas_on_a_booster_serving(
    ferry: SystemInfo, kube: KubeEnv, e2e_namespace: str, e2e_nats: NatsServer, e2e_dir: Path
) -> None:
    """No Ferry policy governs the booster's ModelServing: ``kubectl scale`` and a real HPA (the
    controller-manager's, on the ``/scale`` subresource) set its replicas, and the applier applies the
    booster's value only when that value changes — as ``kubectl apply`` does to a Deployment under an
    HPA. Booster edits, an applier restart (its start-up resync) and a resync keep their value."""
    ns, name, serving = e2e_namespace, "held", "held-cpu"
    apply(kube, ns, fixed_booster(name, 1))
    eventually(lambda: ready_groups(kube, ns, serving) == 1, "the first serving group Ready", 120)
    generation = int(serving_of(kube, ns, serving)["metadata"]["generation"])

    def generations() -> int:
        """Spec writes since the start: each writer's change is one; a fight would add more."""
        return int(serving_of(kube, ns, serving)["metadata"]["generation"]) - generation

    def edit_lands(value: int) -> None:
        """A booster edit that leaves ``replicas`` alone, applied to the ModelServing."""
        edit_booster(kube, ns, name, "/spec/backend/workers/0/config/max-model-len", value)
        eventually(
            lambda: f'"--max-model-len", "{value}"' in json.dumps(serving_of(kube, ns, serving)["spec"]),
            f"the edit (max-model-len {value}) applied to the ModelServing",
            60,
        )

    def taken_over(managers: set[tuple[str, str]]) -> bool:
        """Owned through ``/scale`` by someone else, no longer by the applier."""
        return any(sub == "scale" for _, sub in managers) and all(m != "ferry" for m, _ in managers)

    kube.kubectl_run("-n", ns, "scale", "modelserving", serving, "--replicas=2")
    eventually(lambda: ready_groups(kube, ns, serving) == 2, "two groups Ready after kubectl scale", 90)
    owners = replica_owners(kube, ns, serving)
    print(f"\nspec.replicas owned by {sorted(owners)} after kubectl scale")
    assert taken_over(owners), owners

    edit_lands(4096)
    assert replicas(kube, ns, serving) == 2, "a booster edit reset kubectl scale's replicas"
    assert generations() == 2  # kubectl scale, the edit

    applier = next(p for p in ferry.processes if p.name == "ferry-applier")
    applier.stop()
    env = {**kube.env, "FERRY_NATS_URL": e2e_nats.url, "FERRY_WATCH_NAMESPACE": ns, **FERRY_ENV}
    logs = e2e_dir / "logs-applier-restarted"
    restarted, _, _ = start_service("applier", env, logs, Path(ferry.trace_file))
    ferry.processes[ferry.processes.index(applier)] = restarted
    eventually(lambda: "start-up resync queued" in Path(restarted.log).read_text(), "the start-up resync", 60)
    edit_lands(3072)  # reconciled by the restarted applier, from a view it built afresh
    assert replicas(kube, ns, serving) == 2, "the restarted applier reset kubectl scale's replicas"
    assert generations() == 3

    # The booster's own value changes: it is applied (and the applier owns the field again).
    edit_booster(kube, ns, name, "/spec/backend/replicas", 3)
    eventually(lambda: replicas(kube, ns, serving) == 3, "the booster's new replicas applied", 60)
    assert ("ferry", "") in replica_owners(kube, ns, serving)
    assert generations() == 4

    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": serving},
        "spec": {
            "scaleTargetRef": {"apiVersion": WORKLOAD, "kind": "ModelServing", "name": serving},
            "minReplicas": 2,
            "maxReplicas": 2,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
    }
    apply(kube, ns, hpa)
    # No metrics API here, but an HPA moves replicas outside its range into it (kube-controller-manager).
    eventually(lambda: replicas(kube, ns, serving) == 2, "the HPA scaled the ModelServing to its max", 60)
    owners = replica_owners(kube, ns, serving)
    print(f"spec.replicas owned by {sorted(owners)} after the HPA")
    assert taken_over(owners), owners
    assert generations() == 5
    edit_lands(2560)
    eventually(
        lambda: (
            (b := get_json(kube, ns, "modelboosters", name))["status"].get("observedGeneration")
            == b["metadata"]["generation"]
        ),
        "the booster's status caught up with the edit",
        60,
    )
    status = get_json(kube, ns, "horizontalpodautoscalers", serving)["status"]
    assert status["desiredReplicas"] == 2, status
    assert replicas(kube, ns, serving) == 2, "a booster edit fought the HPA"
    assert generations() == 6, "replicas flipped between the applier and the HPA"
    kube.kubectl_run("-n", ns, "delete", "horizontalpodautoscaler", serving)
    kube.kubectl_run("-n", ns, "delete", "modelbooster", name)


def test_a_heterogeneous_binding_splits_replicas_by_cost(
    ferry: SystemInfo, kube: KubeEnv, e2e_namespace: str
) -> None:
    """A v0.4.0 heterogeneous binding over two boosters' ModelServings of different cost (spec §4.5):
    under load sent through the router to both, the autoscaler computes one total for the pair from
    their summed metric and fills the cheaper one first. What is asserted is what Kthena's algorithm
    (the pure functions) gives for the metrics the binding's status reports, not a fixed number."""
    ns, metric, target = e2e_namespace, "vllm:num_requests_running", 2
    costs = {"cheap-cpu": 10, "dear-cpu": 30}
    low, high = 1, 3
    for name in ("cheap", "dear"):
        apply(kube, ns, fixed_booster(name, low, itl="100ms"))
    for serving in costs:
        eventually(lambda s=serving: ready_groups(kube, ns, s) == low, f"{serving} Ready", 120)
    policy = {
        "apiVersion": WORKLOAD,
        "kind": "AutoscalingPolicy",
        "metadata": {"name": "split"},
        "spec": {
            "tolerancePercent": 0,
            "metrics": [{"metricName": metric, "targetValue": target}],
            "behavior": FAST_BEHAVIOR,
        },
    }
    params = [
        {
            "target": {"targetRef": {"name": serving}, "metricEndpoint": {"port": 8000}},
            "cost": cost,
            "minReplicas": low,
            "maxReplicas": high,
        }
        for serving, cost in costs.items()
    ]
    binding = {
        "apiVersion": WORKLOAD,
        "kind": "AutoscalingPolicyBinding",
        "metadata": {"name": "split"},
        "spec": {
            "policyRef": {"name": "split"},
            "heterogeneousTarget": {"costExpansionRatePercent": 100, "params": params},
        },
    }
    apply(kube, ns, policy)
    apply(kube, ns, binding)
    plan = OptimizerPlan.build([Backend(f"{ns}/{s}", c, low, high) for s, c in costs.items()], 100)

    def settled() -> dict[str, Any] | None:
        """A cycle's status that the pure functions reproduce, with the ModelServings at its split."""
        status = get_json(kube, ns, "autoscalingpolicybindings", "split").get("status") or {}
        units = {u["name"]: u for u in status.get("heterogeneousStatus") or []}
        total = units.get("total") or {}
        if "recommendedReplicas" not in total or not all(f"{ns}/{s}" in units for s in costs):
            return None
        observed = [
            {
                m["name"]: float(m["currentValue"])
                for m in units[f"{ns}/{s}"]["metrics"]
                if "currentValue" in m
            }
            for s in costs
        ]
        predicted = recommend(
            RecommendationInput(
                plan.min_total, plan.max_total, total["currentReplicas"], 0.0, {metric: target}, 0, observed
            )
        )
        split = plan.split(total["desiredReplicas"])
        now = {f"{ns}/{s}": replicas(kube, ns, s) for s in costs}
        steady = total["currentReplicas"] == total["desiredReplicas"] == total["recommendedReplicas"]
        if steady and predicted == total["desiredReplicas"] > plan.min_total and now == split:
            return {"observed": observed, "total": total, "split": split}
        return None

    started = time.monotonic()
    with (
        Load(ferry.router_url, "cheap", clients=4, max_tokens=30) as cheap,
        Load(ferry.router_url, "dear", clients=4, max_tokens=30) as dear,
    ):
        found = eventually(settled, "the pair settled at the optimiser's split of its total", 75)
    print(
        f"\nheterogeneous: {metric} per backend {found['observed']} (target {target}) -> total "
        f"{found['total']['desiredReplicas']} -> {found['split']} after {time.monotonic() - started:.1f}s"
    )
    assert cheap.answered > 0
    assert dear.answered > 0
    split = found["split"]
    assert split[f"{ns}/cheap-cpu"] > low  # the cheaper backend took the extra replicas first
    reasons = {e["reason"] for e in events_for(kube, ns, "split")}
    assert "SuccessfulRescale" in reasons
    for name in ("cheap", "dear"):
        kube.kubectl_run("-n", ns, "delete", "modelbooster", name)
    kube.kubectl_run("-n", ns, "delete", "autoscalingpolicybinding,autoscalingpolicy", "split")


def pd_booster(name: str) -> dict[str, Any]:
    def worker(kind: str, role: str, port: int) -> dict[str, Any]:
        transfer = {"kv_connector": "MooncakeConnectorV1", "kv_role": role, "kv_port": str(port)}
        return {
            "type": kind,
            "image": "vllm/vllm-openai:latest",
            "replicas": 1,
            "pods": 1,
            "config": {
                "served-model-name": name,
                "inter-token-latency": "100ms",
                "kv-transfer-config": json.dumps(transfer),
            },
        }

    return {
        "apiVersion": WORKLOAD,
        "kind": "ModelBooster",
        "metadata": {"name": name},
        "spec": {
            "backend": {
                "name": "pd",
                "type": "vLLMDisaggregated",
                "modelURI": "hf://deepseek-ai/DeepSeek-V2-Lite",
                "cacheURI": "hostpath://mnt/cache/",
                "replicas": 1,
                "workers": [worker("prefill", "kv_producer", 20001), worker("decode", "kv_consumer", 20002)],
            }
        },
    }


def test_pd_booster_roles_scale_within_the_ratio(
    ferry: SystemInfo, kube: KubeEnv, e2e_namespace: str
) -> None:
    """A user's disaggregated policy on a PD booster's ModelServing: decode scales on its load, the
    ratio raises prefill, and the applier (which re-applies the booster's roles) does not fight it."""
    ns, name, serving = e2e_namespace, "pdb", "pdb-pd"
    apply(kube, ns, pd_booster(name))
    eventually(lambda: ready_groups(kube, ns, serving) == 1, "the PD group Ready", 120)
    running = "vllm:num_requests_running"
    sources = {running: {"pod": {"port": 8000}}}
    ratio = {"numeratorRole": "prefill", "denominatorRole": "decode", "minRatio": "500m", "maxRatio": "1"}
    policy = {
        "apiVersion": WORKLOAD,
        "kind": "AutoscalingPolicy",
        "metadata": {"name": "pd-policy"},
        "spec": {
            "tolerancePercent": 0,
            "behavior": FAST_BEHAVIOR,
            "metrics": [{"name": running, "targetValue": 1}],
            "disaggregatedTarget": {
                "targetRef": {"name": serving},
                "roles": {
                    "prefill": {
                        "minReplicas": 1, "maxReplicas": 4,
                        "metrics": [{"name": running, "targetValue": 100}],
                        "metricSources": sources,
                    },
                    "decode": {"minReplicas": 1, "maxReplicas": 6, "metricSources": sources},
                },
                "ratioConstraint": ratio,
            },
        },
    }  # fmt: skip
    apply(kube, ns, policy)

    def roles() -> dict[str, int]:
        template = serving_of(kube, ns, serving)["spec"]["template"]["roles"]
        return {r["name"]: int(r.get("replicas", 1)) for r in template}

    with Load(ferry.router_url, name, clients=4, max_tokens=40):
        scaled = eventually(lambda: roles()["decode"] >= 3 and roles(), "decode scaled up", 90)
        print(f"\nPD scaled to {scaled}")
        assert 0.5 <= scaled["prefill"] / scaled["decode"] <= 1, scaled
        assert scaled["prefill"] >= 2  # raised by the ratio: its own metric never asks for more
        for _ in range(10):  # the applier re-applies the booster meanwhile: the roles stay scaled
            now = roles()
            assert now["decode"] >= 3, now
            assert 0.5 <= now["prefill"] / now["decode"] <= 1, now
            time.sleep(0.5)
    status = get_json(kube, ns, "autoscalingpolicies", "pd-policy")["status"]
    ratio_status = status["disaggregatedStatus"]["ratioStatus"]
    assert ratio_status["numeratorRole"] == "prefill"
    assert 0.5 <= float(ratio_status["currentRatio"]) <= 1


def test_scale_to_zero_and_cold_start_through_the_router(
    ferry: SystemInfo, kube: KubeEnv, e2e_namespace: str
) -> None:
    ns, serving = e2e_namespace, "idle-cpu"
    apply(kube, ns, booster("idle", 0, 2, "vllm:num_requests_running", 2, itl="1ms"))
    eventually(
        lambda: has_condition(get_json(kube, ns, "modelboosters", "idle"), "Initialized"),
        "booster converted",
        60,
    )
    assert replicas(kube, ns, serving) == 0
    client = OpenAI(base_url=f"{ferry.router_url}/v1", api_key="test", timeout=120, max_retries=0)
    eventually(
        lambda: "idle" in {m.id for m in client.models.list().data}, "the route known to the router", 60
    )
    for attempt in ("first", "after idling back to zero"):
        assert replicas(kube, ns, serving) == 0
        sent = time.monotonic()
        answer = client.chat.completions.create(model="idle", messages=CHAT, max_tokens=4)
        cold = time.monotonic() - sent
        assert answer.choices[0].message.content
        print(f"\ncold start ({attempt}): answered after {cold:.2f}s")
        eventually(lambda: replicas(kube, ns, serving) == 0, "back to zero when idle", 90)
        eventually(lambda: not pods_of(kube, ns, serving), "the last engine gone", 60)
    reasons = {e["reason"] for e in events_for(kube, ns, "idle")}
    assert "ScaledFromZero" in reasons
