"""``helm install`` on the local stack actually runs Ferry.

The chart is installed into its own namespace (one replica per service, NATS external: the
module's nats-server). kube-controller-manager's deployment and replicaset controllers create
the pods; the local node binds them and runs Ferry's own image as it runs engines — each
container's entry point as a process with the pod's environment (the chart's ConfigMap), its
volumes (the router's configuration), its ServiceAccount token and in-cluster config — so the
chart's RBAC is what the services get. ``helm install --wait`` returns when every Deployment is
available; a booster applied afterwards becomes Active and answers through the chart's router
Service (resolved to its ready pod, as kube-proxy would).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from ferry_cli.templates import find_template
from ferry_local.binaries import go_tools_bin_dir
from ferry_local.chart import chart_dir
from ferry_local.natsd import NatsServer
from ferry_local.processes import ManagedProcess
from ferry_local.system import start_node

from tests.conftest import KubeEnv, fresh_namespace
from tests.support.cluster import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

SERVICES = ("watcher", "converter", "applier", "status", "router", "autoscaler")
"""One replica each (those the chart has: the autoscaler joins when deploy/ runs it)."""
CORE = ("watcher", "converter", "applier", "status", "router")


@pytest.fixture(scope="module")
def node(kube: KubeEnv, e2e_dir: Path) -> Iterator[ManagedProcess]:
    process = start_node(kube.env, e2e_dir / "logs")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def release(
    kube: KubeEnv, e2e_nats: NatsServer, e2e_namespace: str, node: ManagedProcess, e2e_dir: Path
) -> Iterator[str]:
    helm = go_tools_bin_dir() / "helm"
    with fresh_namespace(kube, "ferry-helm") as namespace:
        values = [
            "nats.enabled=false", f"nats.url={e2e_nats.url}", f"watchNamespace={e2e_namespace}",
            "podGroupCRD.install=false",  # the session's stack installed it from deploy/crds already
            "router.hpa.enabled=false",
            *(f"{service}.replicas=1" for service in SERVICES),
        ]  # fmt: skip
        installed = subprocess.run(
            [str(helm), "install", "ferry", str(chart_dir()), "--namespace", namespace,
             "--kubeconfig", str(kube.kubeconfig), "--wait", "--timeout", "6m",
             *(arg for value in values for arg in ("--set", value))],
            capture_output=True, text=True, timeout=420,
        )  # fmt: skip
        if installed.returncode != 0:
            pods = kube.kubectl_run("-n", namespace, "get", "pods", "-o", "wide", check=False).stdout
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text()[-2000:]}" for p in (e2e_dir / "logs").rglob("*.log")
            )
            pytest.fail(f"helm install failed:\n{installed.stderr}\n{pods}\n{logs}")
        try:
            yield namespace
        finally:
            subprocess.run(
                [str(helm), "uninstall", "ferry", "--namespace", namespace,
                 "--kubeconfig", str(kube.kubeconfig), "--wait", "--timeout", "2m"],
                capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            # the node stops a pod's processes when the pod goes: wait for that before the node stops
            eventually(lambda: not get(kube, namespace, "pods")["items"], 120, "the chart's pods gone")


def get(kube: KubeEnv, namespace: str, *what: str) -> Any:
    return json.loads(kube.kubectl_run("-n", namespace, "get", *what, "-o", "json").stdout)


def router_address(kube: KubeEnv, namespace: str) -> str:
    """The chart's router Service resolved to a ready pod and the port its targetPort names."""
    service = get(kube, namespace, "service", "ferry-router")
    selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
    target = next(p["targetPort"] for p in service["spec"]["ports"] if p["name"] == "http")
    for pod in get(kube, namespace, "pods", "-l", selector)["items"]:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
        )
        if ready:
            ports = {
                p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])
            }
            return f"{pod['status']['podIP']}:{ports[target] if isinstance(target, str) else target}"
    raise AssertionError("no ready router pod behind the Service")


def test_helm_install_runs_ferry_and_a_booster_answers_through_its_router(
    kube: KubeEnv, release: str, e2e_namespace: str
) -> None:
    deployments = get(kube, release, "deployments")["items"]
    assert {f"ferry-{s}" for s in CORE} <= {d["metadata"]["name"] for d in deployments}
    for deployment in deployments:
        assert deployment["status"].get("availableReplicas") == 1, deployment["metadata"]["name"]
    pods = get(kube, release, "pods")["items"]
    assert all(p["spec"].get("nodeName") == "ferry-local" for p in pods)

    manifest = find_template("Qwen2.5-0.5B-CPU").render({"name": "helm-qwen", "namespace": e2e_namespace})
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(manifest))

    def active() -> bool:
        conditions = (
            get(kube, e2e_namespace, "modelbooster", "helm-qwen").get("status", {}).get("conditions") or []
        )
        return any(c["type"] == "Active" and c["status"] == "True" for c in conditions)

    eventually(active, 240, "the booster Active under the chart's Ferry")
    client = openai.OpenAI(
        base_url=f"http://{router_address(kube, release)}/v1", api_key="test", timeout=30, max_retries=0
    )

    def answer() -> str | None:
        try:
            reply = client.chat.completions.create(
                model="helm-qwen", messages=[{"role": "user", "content": "hello"}], max_tokens=8
            )
        except (openai.NotFoundError, openai.APIConnectionError):
            return None  # the route reaches the router's table just after Active
        return reply.choices[0].message.content

    assert eventually(answer, 60, "an answer through the chart's router")
