"""What `make demo` does, asserted: two boosters Active on the local node, answers through the router,
PD traffic seen by a prefill and a decode engine, a killed engine restarted in place, deletion cleans up."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml
from ferry_local.paths import repo_root
from ferry_local.system import SystemInfo
from ferry_mock_engine.cli import ENV_HOST
from openai import OpenAI

from tests.conftest import KubeEnv
from tests.support.processes import processes

pytestmark = pytest.mark.e2e

QWEN, DEEPSEEK = "qwen", "deepseek-v2-lite"
"""Clients ask for the booster's name (the ModelRoute's modelName), as with Kthena."""
QWEN_SERVED = "Qwen2.5-0.5B-Instruct"


def kill_engines(pod_ips: set[str]) -> None:
    """SIGTERM the mock engines serving ``pod_ips`` (this test's stack only: other workers' stacks
    run the same model, so a match on its name alone would reach them too)."""
    engines = [p for p in processes() if p.environ().get(ENV_HOST) in pod_ips]
    assert engines, f"no engine process serves {sorted(pod_ips)}"
    for engine in engines:
        os.kill(engine.pid, signal.SIGTERM)


def eventually(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if value := check():
                return value
        except (httpx.HTTPError, json.JSONDecodeError, KeyError) as exc:
            last = exc
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


def get_json(kube: KubeEnv, namespace: str, *what: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(kube.kubectl_run("-n", namespace, "get", *what, "-o", "json").stdout)
    return result


def condition(obj: dict[str, Any], kind: str) -> bool:
    return any(
        c["type"] == kind and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions") or []
    )


def all_active(kube: KubeEnv, namespace: str) -> bool:
    items = get_json(kube, namespace, "modelboosters")["items"]
    return len(items) == 2 and all(condition(b, "Active") for b in items)


def pods_by_role(kube: KubeEnv, namespace: str, serving: str) -> dict[str, list[dict[str, Any]]]:
    pods = get_json(kube, namespace, "pods", "-l", f"modelserving.volcano.sh/name={serving}")["items"]
    roles: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        roles.setdefault(pod["metadata"]["labels"].get("modelserving.volcano.sh/role", ""), []).append(pod)
    return roles


def restart_count(pod: dict[str, Any]) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses)


def serving(engines: dict[str, str]) -> list[str]:
    """The engines (pod keys by address) that still answer on their address."""
    alive = []
    for ip, key in engines.items():
        try:
            info = httpx.get(f"http://{ip}:8000/mock/info", timeout=2).json()
        except (httpx.TransportError, ValueError):  # nothing there, or not an engine of ours
            continue
        if info.get("engine_id") == key:
            alive.append(key)
    return alive


def engine_requests(pod: dict[str, Any]) -> list[dict[str, Any]]:
    answer = httpx.get(f"http://{pod['status']['podIP']}:8000/mock/requests", timeout=5)
    answer.raise_for_status()
    body = answer.json()
    records: list[dict[str, Any]] = body["requests"] if isinstance(body, dict) else body
    return records


def test_demo_flow_on_the_local_node(ferry: SystemInfo, kube: KubeEnv, e2e_namespace: str) -> None:
    demo = repo_root() / "deploy" / "local" / "demo"
    for path in sorted(demo.glob("[1-9]*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        manifest["metadata"]["namespace"] = e2e_namespace
        kube.kubectl_run("apply", "-f", "-", input=json.dumps(manifest))
    eventually(lambda: all_active(kube, e2e_namespace), "both boosters Active", timeout=180)

    client = OpenAI(base_url=f"{ferry.router_url}/v1", api_key="test", timeout=30, max_retries=0)
    assert {QWEN, DEEPSEEK} <= {m.id for m in client.models.list().data}
    answer = client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    assert answer.choices[0].message.content
    assert QWEN_SERVED in answer.model or answer.model == QWEN
    streamed = client.chat.completions.create(
        model=DEEPSEEK, messages=[{"role": "user", "content": "Where is Beijing?"}], max_tokens=8, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text

    # The PD request went to a prefill engine, then to a decode engine.
    roles = pods_by_role(kube, e2e_namespace, "deepseek-v2-lite-deepseek-v2-lite")
    assert set(roles) >= {"prefill", "decode"}
    seen_prefill = [r for p in roles["prefill"] for r in engine_requests(p) if r.get("role") == "prefill"]
    seen_decode = [r for p in roles["decode"] for r in engine_requests(p) if r.get("role") == "decode"]
    assert seen_prefill, "no prefill engine saw the request"
    assert seen_decode, "no decode engine saw the request"

    # Kill the quick-start engine: as a kubelet would, the node restarts it in place (restartPolicy
    # Always, back-off, restartCount), within the serving's 60 s restartGracePeriodSeconds, so the
    # pod recovers without being recreated and traffic goes on.
    old = pods_by_role(kube, e2e_namespace, "qwen-cpu")
    old_uids = {p["metadata"]["uid"] for pods in old.values() for p in pods}
    kill_engines({p["status"]["podIP"] for pods in old.values() for p in pods})

    def recovered() -> bool:
        pods = [p for group in pods_by_role(kube, e2e_namespace, "qwen-cpu").values() for p in group]
        restarted = [p for p in pods if p["metadata"]["uid"] in old_uids and restart_count(p) >= 1]
        return bool(restarted) and all(condition(p, "Ready") for p in pods)

    eventually(recovered, "the killed engine restarted in place and its pod Ready again", timeout=120)
    again = eventually(
        lambda: client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "again"}]),
        "traffic to continue after recovery",
        timeout=60,
    )
    assert again.choices[0].message.content

    # Deleting the boosters removes every child and stops the engines.
    engines = {
        p["status"]["podIP"]: f"{e2e_namespace}/{p['metadata']['name']}"
        for p in get_json(kube, e2e_namespace, "pods")["items"]
    }
    kube.kubectl_run("-n", e2e_namespace, "delete", "modelboosters", "--all", "--wait=false")
    kinds = "modelservings,modelservers,modelroutes,podgroups,pods,services"
    eventually(lambda: not get_json(kube, e2e_namespace, kinds)["items"], "every child gone", timeout=90)
    # A pod removed at once (no grace) has its engine stopped at the node's next pass, as on a
    # kubelet; a freed address may already serve another stack's pod (tests run two stacks at once).
    eventually(lambda: not serving(engines), "every engine of the deleted pods stopped", timeout=30)
