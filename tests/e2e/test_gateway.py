"""Gateway mode on the real local stack: Gateways, HTTPRoutes and InferencePools served and reported.

Every Ferry service runs as its own process with ``FERRY_GATEWAY_API=true`` (watcher over all
namespaces, since Kthena's default Gateway lives in ``kthena-system``), the local node runs a mock
engine per pod of plain Deployments (kube-controller-manager's deployment and replicaset
controllers create the pods), and clients are the official ``openai`` client.
"""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ferry_local.natsd import NatsServer
from ferry_local.paths import shared_dir
from ferry_local.processes import ManagedProcess
from ferry_local.readiness import free_port
from ferry_local.system import SystemInfo, start_service, start_system
from openai import OpenAI

from tests.conftest import KubeEnv, fresh_namespace
from tests.support.cluster import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

GATEWAY_NS = "kthena-system"
CONTROLLER = "volcano.sh/kthena-router"
JSON = dict[str, Any]


@pytest.fixture(scope="module")
def router_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gateway_env(kube: KubeEnv, e2e_nats: NatsServer, router_port: int) -> dict[str, str]:
    return {
        **kube.env,
        "FERRY_NATS_URL": e2e_nats.url,
        "FERRY_GATEWAY_API": "true",
        "FERRY_GATEWAY_NAMESPACE": GATEWAY_NS,
        "FERRY_GATEWAY_DEFAULT_PORT": str(router_port),
        "FERRY_ACK_WAIT": "10",
    }


@pytest.fixture(scope="module")
def router_env(router_port: int) -> dict[str, str]:
    return {"FERRY_ROUTER_PORT": str(router_port), "FERRY_ROUTER_DEBUG_PORT": str(free_port())}


@pytest.fixture(scope="module")
def ferry(
    kube: KubeEnv, gateway_env: dict[str, str], router_env: dict[str, str], e2e_dir: Path,
    kubelet: ManagedProcess,
) -> Iterator[SystemInfo]:  # fmt: skip
    kube.kubectl_run("create", "namespace", GATEWAY_NS, check=False)
    system = start_system(
        gateway_env, e2e_dir / "logs", e2e_dir / "spans.jsonl", router_env=router_env, with_node=False
    )
    try:
        yield system
    finally:
        for process in reversed(system.processes):
            process.stop()


@pytest.fixture
def ns(kube: KubeEnv) -> Iterator[str]:
    with fresh_namespace(kube, "gw") as name:
        yield name


def apply(kube: KubeEnv, *objects: JSON) -> None:
    kube.kubectl_run(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    )


def get(kube: KubeEnv, resource: str, namespace: str, name: str) -> JSON | None:
    done = kube.kubectl_run("get", resource, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def deployment(
    namespace: str, name: str, model: str, replicas: int = 1, args: list[str] | None = None
) -> JSON:
    labels = {"app": name}
    container: JSON = {
        "name": "llm-engine",
        "image": "ghcr.io/faust-benchou/dynamo-mocker-vllm:latest",
        "env": [{"name": "MODEL_NAME", "value": model}],
    }
    if args:
        container["args"] = args
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def model_server(namespace: str, name: str, model: str) -> JSON:
    return {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": "ModelServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "workloadSelector": {"matchLabels": {"app": name}},
            "workloadPort": {"port": 8000},
            "model": model,
            "inferenceEngine": "vLLM",
        },
    }


def model_route(namespace: str, name: str, model_name: str, server: str, gateway: str | None) -> JSON:
    spec: JSON = {
        "modelName": model_name,
        "rules": [{"name": "default", "targetModels": [{"modelServerName": server}]}],
    }
    if gateway:
        spec["parentRefs"] = [{"name": gateway, "namespace": namespace, "kind": "Gateway"}]
    return {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def gateway(namespace: str, name: str, port: int) -> JSON:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": "kthena-router",
            "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}],
        },
    }


def ready_pods(kube: KubeEnv, namespace: str, app: str, count: int) -> list[JSON]:
    def ready() -> list[JSON] | None:
        done = kube.kubectl_run("get", "pods", "-n", namespace, "-l", f"app={app}", "-o", "json")
        pods = [
            pod
            for pod in json.loads(done.stdout)["items"]
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
            )
        ]
        return pods if len(pods) >= count else None

    return eventually(ready, 120, f"{count} ready pods of {app}")


def chat(base_url: str, model: str, text: str = "hello") -> Any:
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=30, max_retries=0)
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=8
    )


def post_chat(base_url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=10)


def answered_by(answer: Any) -> str:
    """The mock engine names the pod that answered (``… via <ns>/<pod>``)."""
    content = answer.choices[0].message.content or ""
    return content.rsplit(" via ", 1)[1].split()[0] if " via " in content else content


def try_chat(base_url: str, model: str) -> Any:
    try:
        return chat(base_url, model)
    except Exception:
        return None


def condition(conditions: list[JSON], type_: str) -> JSON:
    return next((c for c in conditions if c["type"] == type_), {})


def our_parent(obj: JSON | None) -> JSON:
    parents = ((obj or {}).get("status") or {}).get("parents") or []
    return next((p for p in parents if p.get("controllerName") == CONTROLLER), {})


# --------------------------------------------------------------------------- tests


def test_same_model_name_on_two_gateways_reaches_each_gateways_backend(
    ferry: SystemInfo, kube: KubeEnv, ns: str
) -> None:
    port_a, port_b = free_port(), free_port()
    shared = f"shared-{uuid.uuid4().hex[:6]}"
    apply(
        kube,
        deployment(ns, "eng-a", "model-a"),
        deployment(ns, "eng-b", "model-b"),
        model_server(ns, "eng-a", "model-a"),
        model_server(ns, "eng-b", "model-b"),
        gateway(ns, "gw-a", port_a),
        gateway(ns, "gw-b", port_b),
        model_route(ns, "route-a", shared, "eng-a", "gw-a"),
        model_route(ns, "route-b", shared, "eng-b", "gw-b"),
    )
    ready_pods(kube, ns, "eng-a", 1)
    ready_pods(kube, ns, "eng-b", 1)
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    answer_a = eventually(lambda: try_chat(url_a, shared), 60, f"an answer on gateway gw-a (port {port_a})")
    answer_b = eventually(lambda: try_chat(url_b, shared), 60, f"an answer on gateway gw-b (port {port_b})")
    assert answer_a.model == "model-a"
    assert answered_by(answer_a).startswith(f"{ns}/eng-a-")
    assert answer_b.model == "model-b"
    assert answered_by(answer_b).startswith(f"{ns}/eng-b-")
    for _ in range(5):  # each Gateway keeps its own backend, never the other's
        assert answered_by(chat(url_a, shared)).startswith(f"{ns}/eng-a-")
        assert answered_by(chat(url_b, shared)).startswith(f"{ns}/eng-b-")
    # the model is bound to those Gateways only: the router's own port does not serve it
    listed = httpx.get(f"{url_a}/v1/models", timeout=5).json()["data"]
    assert [m["id"] for m in listed] == [shared]
    missing = post_chat(ferry.router_url, shared)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"

    # both Gateways are Accepted and Programmed, with the router's address and listener status
    def programmed(name: str) -> JSON | None:
        status = (get(kube, "gateways", ns, name) or {}).get("status") or {}
        ok = condition(status.get("conditions") or [], "Programmed").get("status") == "True"
        return status if ok else None

    for name in ("gw-a", "gw-b"):
        status = eventually(lambda name=name: programmed(name), 30, f"Gateway {name} Programmed")
        assert condition(status["conditions"], "Accepted")["status"] == "True"
        assert status["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
        (listener,) = status["listeners"]
        assert listener["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]
        assert {c["type"]: c["status"] for c in listener["conditions"]} == {
            "Accepted": "True", "Programmed": "True", "ResolvedRefs": "True", "Conflicted": "False",
        }  # fmt: skip


def _hold_streams(url: str, model: str, count: int, release: threading.Event) -> list[threading.Thread]:
    """``count`` slow streaming requests sent straight to one engine, held open until ``release``."""

    def hold() -> None:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "busy"}],
            "max_tokens": 400,
            "stream": True,
        }
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
                for _ in response.iter_bytes():
                    if release.is_set():
                        return
        except httpx.HTTPError:
            return

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_httproute_to_inference_pool_with_load_aware_picking_and_status(
    ferry: SystemInfo, kube: KubeEnv, ns: str, router_env: dict[str, str]
) -> None:
    served = f"pool-model-{uuid.uuid4().hex[:6]}"
    pool = {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": {"name": "pool", "namespace": ns},
        "spec": {
            "targetPorts": [{"number": 8000}],
            "selector": {"matchLabels": {"app": "pool-eng"}},
            "endpointPickerRef": {"name": "unused", "port": {"number": 9002}},
        },
    }
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "llm-route", "namespace": ns},
        "spec": {
            "parentRefs": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": "default",
                    "namespace": GATEWAY_NS,
                }
            ],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "filters": [
                        {
                            "type": "ResponseHeaderModifier",
                            "responseHeaderModifier": {"set": [{"name": "x-served-by", "value": "ferry"}]},
                        }
                    ],
                    "backendRefs": [
                        {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "pool"}
                    ],
                }
            ],
        },
    }
    engines = deployment(ns, "pool-eng", served, replicas=2, args=["--max-num-seqs=2"])
    apply(kube, engines, pool, route)
    pods = ready_pods(kube, ns, "pool-eng", 2)
    url = ferry.router_url  # the default Gateway's listener is the router's own port
    first = eventually(lambda: try_chat(url, served), 60, "an answer through the HTTPRoute")
    assert first.model == served
    assert post_chat(url, served).headers["x-served-by"] == "ferry"

    # load-aware: one engine is kept busy (2 running, 10 queued: least-request's maxWaitingRequests),
    # so the pool's scheduler sends every new request to the other
    busy, idle = pods
    busy_url = f"http://{busy['status']['podIP']}:8000"
    httpx.post(f"{busy_url}/mock/config", json={"itl": 0.1}, timeout=5).raise_for_status()
    release = threading.Event()
    threads = _hold_streams(busy_url, served, 12, release)
    debug_port = router_env["FERRY_ROUTER_DEBUG_PORT"]
    debug = f"http://127.0.0.1:{debug_port}/debug/config_dump/namespaces/{ns}/pods/{busy['metadata']['name']}"

    seen: list[Any] = []

    def router_sees_load() -> bool:
        try:
            answer = httpx.get(debug, timeout=5).json()
        except httpx.HTTPError as exc:
            seen.append(exc)
            return False
        seen.append(answer)
        metrics = answer.get("metrics") or {}
        return float(metrics.get("requestWaitingNum", 0)) >= 10

    try:
        try:
            eventually(router_sees_load, 30, "the router to scrape the busy engine's load")
        except AssertionError as exc:
            every = httpx.get(f"http://127.0.0.1:{debug_port}/debug/config_dump/pods", timeout=5).text
            raise AssertionError(f"{exc}; the router's view of it: {seen[-1:]}; all: {every}") from None
        # distinct prompts, so prefix-cache affinity plays no part: only the load decides
        picked = Counter(answered_by(chat(url, served, uuid.uuid4().hex)) for _ in range(20))
        view = httpx.get(f"http://127.0.0.1:{debug_port}/debug/config_dump/pods", timeout=5).text
    finally:
        release.set()
        httpx.post(f"{busy_url}/mock/config", json={"itl": 0.0}, timeout=5)
        for thread in threads:
            thread.join(timeout=10)
    idle_key = f"{ns}/{idle['metadata']['name']}"
    assert picked[idle_key] >= 18, (
        f"requests by engine while {busy['metadata']['name']} was busy: {dict(picked)}; router: {view}"
    )

    # status: the route is accepted by the default Gateway and its references resolve; the pool
    # names the Gateway as its parent
    def route_ok() -> JSON | None:
        parent = our_parent(get(kube, "httproutes", ns, "llm-route"))
        states = {c["type"]: c["status"] for c in parent.get("conditions") or []}
        return parent if states == {"Accepted": "True", "ResolvedRefs": "True"} else None

    parent = eventually(route_ok, 30, "HTTPRoute Accepted and ResolvedRefs")
    assert parent["parentRef"]["name"] == "default"
    assert parent["parentRef"]["namespace"] == GATEWAY_NS
    pool_parent = eventually(
        lambda: our_parent(get(kube, "inferencepools", ns, "pool")), 30, "InferencePool parent status"
    )
    assert pool_parent["parentRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "namespace": GATEWAY_NS,
        "name": "default",
    }

    # the backend disappears: ResolvedRefs turns False (BackendNotFound) and requests get a 500
    kube.kubectl_run("delete", "inferencepool", "pool", "-n", ns)

    def refs_broken() -> JSON | None:
        found = condition(
            our_parent(get(kube, "httproutes", ns, "llm-route")).get("conditions") or [], "ResolvedRefs"
        )
        return found if found.get("status") == "False" else None

    broken = eventually(refs_broken, 30, "HTTPRoute ResolvedRefs=False after the pool is deleted")
    assert broken["reason"] == "BackendNotFound"
    gone = post_chat(url, served)
    assert gone.status_code == 500, gone.text
    apply(kube, pool)
    eventually(route_ok, 30, "HTTPRoute ResolvedRefs=True again once the pool is back")
    eventually(lambda: try_chat(url, served), 60, "answers again once the pool is back")


def test_httproute_to_a_service_with_rewrite_and_redirect(ferry: SystemInfo, kube: KubeEnv, ns: str) -> None:
    """A Service backendRef (port 80 → the engines' 8000) behind a URLRewrite, and a RequestRedirect."""
    served = f"svc-model-{uuid.uuid4().hex[:6]}"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "engines", "namespace": ns},
        "spec": {"selector": {"app": "svc-eng"}, "ports": [{"port": 80, "targetPort": 8000}]},
    }
    parent = {"name": "default", "namespace": GATEWAY_NS}
    rewrite = {
        "type": "URLRewrite",
        "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v1"}},
    }
    redirect = {"type": "RequestRedirect", "requestRedirect": {"hostname": "example.com", "statusCode": 301}}
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "svc-route", "namespace": ns},
        "spec": {
            "parentRefs": [parent],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": f"/{ns}"}}],
                    "filters": [rewrite],
                    "backendRefs": [{"kind": "Service", "name": "engines", "port": 80}],
                },
                {"matches": [{"path": {"type": "Exact", "value": f"/{ns}-old"}}], "filters": [redirect]},
            ],
        },
    }
    apply(kube, deployment(ns, "svc-eng", served), service, route)
    ready_pods(kube, ns, "svc-eng", 1)

    def models() -> list[str] | None:
        try:
            answer = httpx.get(f"{ferry.router_url}/{ns}/models", timeout=5)
        except httpx.HTTPError:
            return None
        return [m["id"] for m in answer.json()["data"]] if answer.status_code == 200 else None

    # GET /<ns>/models is rewritten to the engine's own /v1/models, through the Service's targetPort
    assert served in eventually(models, 60, "the engine's model list through the Service backend")
    moved = httpx.get(f"{ferry.router_url}/{ns}-old?x=1", timeout=5)
    assert moved.status_code == 301
    assert moved.headers["location"].startswith(
        f"http://example.com:{ferry.router_url.rsplit(':', 1)[1]}/{ns}-old?x=1"
    )
    parent_status = eventually(
        lambda: our_parent(get(kube, "httproutes", ns, "svc-route")), 30, "route status"
    )
    assert {c["type"]: c["status"] for c in parent_status["conditions"]} == {
        "Accepted": "True",
        "ResolvedRefs": "True",
    }


def test_gateway_goes_unprogrammed_when_no_router_serves_it(
    ferry: SystemInfo,
    kube: KubeEnv,
    ns: str,
    gateway_env: dict[str, str],
    router_env: dict[str, str],
    e2e_dir: Path,
) -> None:
    port = free_port()
    apply(kube, gateway(ns, "lonely", port))

    def programmed(value: str) -> JSON | None:
        status = (get(kube, "gateways", ns, "lonely") or {}).get("status") or {}
        found = condition(status.get("conditions") or [], "Programmed")
        return status if found.get("status") == value else None

    eventually(lambda: programmed("True"), 30, "Gateway Programmed while the router serves it")
    old = next(p for p in ferry.processes if p.name == "ferry-router")
    old.stop()
    try:
        status = eventually(
            lambda: programmed("False"), 30, "Gateway Programmed=False once no router serves it"
        )
        assert condition(status["conditions"], "Programmed")["reason"] == "Pending"
        assert "addresses" not in status
    finally:
        new, _, _ = start_service(
            "router", gateway_env, e2e_dir / "logs", e2e_dir / "spans.jsonl", router_env
        )
        ferry.processes[ferry.processes.index(old)] = new
    eventually(lambda: programmed("True"), 60, "Gateway Programmed again after the router restarted")


def test_gateway_mode_off_leaves_the_router_unchanged(
    ferry: SystemInfo, kube: KubeEnv, ns: str, e2e_nats: NatsServer, e2e_dir: Path
) -> None:
    """A router without FERRY_GATEWAY_API on the same bus: parentRefs are ignored (as before),
    no Gateway listener is opened, HTTPRoutes are not served."""
    port = free_port()
    model = f"plain-{uuid.uuid4().hex[:6]}"
    apply(
        kube,
        deployment(ns, "eng-off", "model-off"),
        model_server(ns, "eng-off", "model-off"),
        gateway(ns, "gw-off", port),
        model_route(ns, "bound", model, "eng-off", "gw-off"),
    )
    ready_pods(kube, ns, "eng-off", 1)
    env = {**kube.env, "FERRY_NATS_URL": e2e_nats.url}
    process, ready_url, _ = start_service("router", env, e2e_dir / "logs-off", e2e_dir / "spans-off.jsonl")
    try:
        eventually(lambda: _ok(ready_url), 60, "the plain router ready")
        base = ready_url.removesuffix("/readyz")
        answer = eventually(lambda: try_chat(base, model), 60, "the plain router serving the bound route")
        assert answered_by(answer).startswith(f"{ns}/eng-off-")
        gateway_url = f"http://127.0.0.1:{port}"
        eventually(lambda: try_chat(gateway_url, model), 30, "the gateway-mode router serving gw-off")
    finally:
        process.stop()
    assert "gateway listener" not in Path(process.log).read_text()


# --------------------------------------------------------------------------- helpers


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


def test_kthena_router_gateway_examples_work_unchanged(ferry: SystemInfo, kube: KubeEnv) -> None:
    """Kthena's Gateway.yaml, HTTPRoute.yaml, InferencePool.yaml and ModelRoute-binding-gateway.yaml,
    with the LLM-Mock Deployment and ModelServer there as backends, applied as they are."""
    examples = shared_dir() / "reference" / "kthena" / "head" / "examples" / "kthena-router"
    in_default = ["LLM-Mock-ds1.5b.yaml", "ModelServer-ds1.5b.yaml", "ModelRoute-binding-gateway.yaml",
                  "InferencePool.yaml", "HTTPRoute.yaml"]  # fmt: skip
    try:
        for name in in_default:
            kube.kubectl_run("apply", "-n", "default", "-f", str(examples / name))
        kube.kubectl_run("apply", "-f", str(examples / "Gateway.yaml"))
        ready_pods(kube, "default", "deepseek-r1-1-5b", 3)
        served = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
        # the ModelRoute bound to Kthena's default Gateway (the router's own port)
        bound = eventually(
            lambda: try_chat(ferry.router_url, "deepseek-binding-gateway"), 60, "the bound route"
        )
        assert bound.model == served
        assert answered_by(bound).startswith("default/deepseek-r1-1-5b-")
        # the HTTPRoute to the InferencePool (no ModelRoute serves the engine's own model name)
        pooled = eventually(lambda: try_chat(ferry.router_url, served), 60, "the HTTPRoute to the pool")
        assert answered_by(pooled).startswith("default/deepseek-r1-1-5b-")

        def accepted() -> JSON | None:
            status = (get(kube, "gateways", GATEWAY_NS, "kthena-gateway") or {}).get("status") or {}
            return (
                status
                if condition(status.get("conditions") or [], "Accepted").get("status") == "True"
                else None
            )

        status = eventually(accepted, 30, "Kthena's example Gateway Accepted")
        assert [x["name"] for x in status["listeners"]] == ["http"]
        route = eventually(
            lambda: our_parent(get(kube, "httproutes", "default", "llm-route")), 30, "route status"
        )
        assert {c["type"]: c["status"] for c in route["conditions"]} == {
            "Accepted": "True",
            "ResolvedRefs": "True",
        }
    finally:
        for name in reversed(in_default):
            kube.kubectl_run(
                "delete", "-n", "default", "-f", str(examples / name), "--wait=false", check=False
            )
        kube.kubectl_run("delete", "-f", str(examples / "Gateway.yaml"), "--wait=false", check=False)
