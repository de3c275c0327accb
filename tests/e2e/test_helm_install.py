"""``helm install`` on the local stack actually runs Ferry.

The chart is installed into its own namespace (one replica per service, NATS external: a
nats-server shaped by what the chart's pods expect — their users, TLS when they name a CA — with
the Secrets they reference created from it, as an installer bringing their own NATS would).
kube-controller-manager's deployment and replicaset controllers create
the pods; the local node binds them and runs Ferry's own image as it runs engines — each
container's entry point as a process with the pod's environment (the chart's ConfigMap), its
volumes (the router's configuration), its ServiceAccount token and in-cluster config — so the
chart's RBAC is what the services get. ``helm install --wait`` returns when every Deployment is
available, and no service's process may have exited on the way (restartCount 0); a booster
applied afterwards becomes Active and answers through the chart's router Service (resolved to its
ready pod, as kube-proxy would).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from ferry_cli.templates import find_template
from ferry_local.binaries import find_binaries, go_tools_bin_dir
from ferry_local.chart import chart_dir
from ferry_local.pki import ensure_pki
from ferry_local.processes import ManagedProcess, spawn
from ferry_local.readiness import free_port, http_ok, wait_until_ready
from ferry_local.system import start_node

from tests.conftest import KubeEnv, fresh_namespace, local_cluster
from tests.support.cluster import eventually

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

SERVICES = ("watcher", "converter", "applier", "status", "router", "autoscaler")
"""One replica each (those the chart has: the autoscaler joins when deploy/ runs it)."""
CORE = ("watcher", "converter", "applier", "status", "router")


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeEnv]:
    """A cluster of its own: the chart's cluster-scoped objects (CRDs, ClusterRoles named as in
    deploy/) would clash with those the session's services were given from deploy/ directly, as two
    installations of Ferry in one cluster do."""
    with local_cluster("helm-stack", crds=False) as env:
        yield env


@pytest.fixture(scope="module")
def node(kube: KubeEnv, e2e_dir: Path) -> Iterator[ManagedProcess]:
    process = start_node(kube.env, e2e_dir / "logs")
    try:
        yield process
    finally:
        process.stop()


@dataclass
class ExternalNats:
    """The NATS an installer brings (``nats.enabled=false``), shaped by what the chart's pods expect:
    a user and password for each ``FERRY_NATS_USER`` (from the Secret keys the pods reference), TLS
    when they name a CA (``FERRY_NATS_CA``; the CA goes into the Secret they mount)."""

    url: str
    secrets: dict[str, dict[str, str]]
    process: ManagedProcess


def chart_objects(helm: Path, values: list[str]) -> list[dict[str, Any]]:
    args = [str(helm), "template", "ferry", str(chart_dir()), *(a for v in values for a in ("--set", v))]
    rendered = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def external_nats(objects: list[dict[str, Any]], directory: Path) -> ExternalNats:
    containers = [
        c for o in objects if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]
    ]
    users = {e["value"] for c in containers for e in c.get("env") or [] if e["name"] == "FERRY_NATS_USER"}
    tls = any(e["name"] == "FERRY_NATS_CA" for c in containers for e in c.get("env") or [])
    passwords = {user: secrets.token_hex(12) for user in users}
    directory.mkdir(parents=True, exist_ok=True)
    pki = ensure_pki(directory / "pki") if tls else None
    wanted: dict[str, set[str]] = {}
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for env in container.get("env") or []:
                if ref := (env.get("valueFrom") or {}).get("secretKeyRef"):
                    wanted.setdefault(ref["name"], set()).add(ref["key"])
        for volume in pod.get("volumes") or []:
            if ref := volume.get("secret"):
                wanted.setdefault(ref["secretName"], set()).update(i["key"] for i in ref.get("items") or [])
    data: dict[str, dict[str, str]] = {}
    for name, keys in wanted.items():
        for key in keys:
            if key in passwords:
                data.setdefault(name, {})[key] = passwords[key]
            elif key == "ca.crt" and pki is not None:
                data.setdefault(name, {})[key] = pki.ca_crt.read_text()
            else:
                pytest.fail(f"the chart's pods need secret {name} key {key}: this test does not know it")
    port, monitor = free_port(), free_port()
    conf = [f"listen: 127.0.0.1:{port}", f"http: 127.0.0.1:{monitor}",
            f"jetstream {{ store_dir: {json.dumps(str(directory / 'store'))} }}"]  # fmt: skip
    if pki is not None:
        cert, key = json.dumps(str(pki.server_crt)), json.dumps(str(pki.server_key))
        conf.append(f"tls {{ cert_file: {cert}, key_file: {key} }}")
    if passwords:
        entries = ", ".join(
            f"{{user: {json.dumps(u)}, password: {json.dumps(p)}}}" for u, p in passwords.items()
        )
        conf.append(f"authorization {{ users: [{entries}] }}")
    (directory / "nats.conf").write_text("\n".join(conf) + "\n")
    process = spawn("nats-external", [str(find_binaries().nats_server), "-c", str(directory / "nats.conf")],
                    directory)  # fmt: skip
    wait_until_ready("nats-server", process, lambda: http_ok(f"http://127.0.0.1:{monitor}/healthz"), 30)
    return ExternalNats(f"{'tls' if pki else 'nats'}://127.0.0.1:{port}", data, process)


@pytest.fixture(scope="module")
def release(kube: KubeEnv, e2e_namespace: str, node: ManagedProcess, e2e_dir: Path) -> Iterator[str]:
    helm = go_tools_bin_dir() / "helm"
    values = [
        "nats.enabled=false", f"watchNamespace={e2e_namespace}",
        "nats.streamReplicas=1",  # one external server
        "router.hpa.enabled=false",
        *(f"{service}.replicas=1" for service in SERVICES),
    ]  # fmt: skip
    nats = external_nats(
        chart_objects(helm, [*values, "nats.url=nats://probe:4222"]), e2e_dir / "nats-external"
    )
    values.append(f"nats.url={nats.url}")
    try:
        with fresh_namespace(kube, "ferry-helm") as namespace:
            yield from installed(kube, helm, namespace, values, nats, e2e_dir / "logs")
    finally:
        nats.process.stop()  # also when the install fails or the run is interrupted


def installed(
    kube: KubeEnv, helm: Path, namespace: str, values: list[str], nats: ExternalNats, logs: Path
) -> Iterator[str]:
    """The release installed in ``namespace`` (``--wait``), uninstalled and its pods gone after."""
    for name, data in nats.secrets.items():
        literals = [f"--from-literal={k}={v}" for k, v in data.items()]
        kube.kubectl_run("-n", namespace, "create", "secret", "generic", name, *literals)
    try:
        done = subprocess.run(
            [str(helm), "install", "ferry", str(chart_dir()), "--namespace", namespace,
             "--kubeconfig", str(kube.kubeconfig), "--wait", "--timeout", "6m",
             *(arg for value in values for arg in ("--set", value))],
            capture_output=True, text=True, timeout=420,
        )  # fmt: skip
        if done.returncode != 0:
            pods = kube.kubectl_run("-n", namespace, "get", "pods", "-o", "wide", check=False).stdout
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs.rglob("*.log"))
            pytest.fail(f"helm install failed:\n{done.stderr}\n{pods}\n{tails}")
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
    # the node restarts a container only when its process exits: none of Ferry's may have crashed
    restarts = {
        f"{p['metadata']['name']}/{s['name']}": s["restartCount"]
        for p in pods
        for s in p["status"].get("containerStatuses") or []
    }
    assert restarts, "the node reports no container status"
    assert not any(restarts.values()), f"a chart service exited and was restarted: {restarts}"

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
