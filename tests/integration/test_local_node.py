"""The local node binds gangs, runs engines, reports readiness, restarts and failure as a kubelet
would, never takes an address something else listens on, refuses images outside its catalogue,
honours readiness gates, and finishes deletion."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ferry_local.readiness import StackError
from ferry_local.system import start_node

from tests.conftest import KubeEnv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_node(kube: KubeEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    logs = tmp_path_factory.mktemp("node")
    process = start_node(kube.env, logs, {"FERRY_NODE_RESTART_BACKOFF": "1"})
    try:
        yield logs
    finally:
        process.stop()


def eventually(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def get_pod(kube: KubeEnv, namespace: str, name: str) -> dict[str, Any] | None:
    done = kube.kubectl_run("-n", namespace, "get", "pod", name, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def engine_pod(namespace: str, name: str, model: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"scheduling.k8s.io/group-name": "gang"},
        },
        "spec": {
            "schedulerName": "volcano",
            "containers": [
                {"name": "sidecar", "image": "kthena/runtime:latest", "args": ["--port", "8900"]},
                {
                    "name": "engine",
                    "image": "vllm/vllm-openai:latest",
                    "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
                    "args": ["--model", "m", "--served-model-name", model, "--port", "8000"],
                },
            ],
            **spec,
        },
    }


def apply(kube: KubeEnv, manifest: dict[str, Any]) -> None:
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(manifest))


def gang(namespace: str, min_member: int) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": "gang", "namespace": namespace},
        "spec": {"minMember": min_member},
    }


def engine_status(pod: dict[str, Any] | None) -> dict[str, Any]:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s["name"] == "engine"), {})


def is_ready(pod: dict[str, Any] | None) -> bool:
    conditions = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_ready(kube: KubeEnv, namespace: str, name: str) -> dict[str, Any]:
    def ready_pod() -> dict[str, Any] | None:
        pod = get_pod(kube, namespace, name)
        return pod if is_ready(pod) else None

    pod: dict[str, Any] = eventually(ready_pod, f"pod {name} Ready")
    return pod


def test_gang_binding_readiness_restart_failure_and_deletion(
    local_node: Path, kube: KubeEnv, namespace: str
) -> None:
    apply(kube, gang(namespace, 2))
    apply(kube, engine_pod(namespace, "a", f"model-a-{namespace}"))
    time.sleep(3)  # a negative: give the node several passes to (wrongly) bind the lonely pod
    lonely = get_pod(kube, namespace, "a")
    assert lonely is not None
    assert not lonely["spec"].get("nodeName"), "a pod was bound before its gang's minMember was met"

    apply(kube, engine_pod(namespace, "b", f"model-b-{namespace}", restartPolicy="Never"))
    pods = {name: wait_ready(kube, namespace, name) for name in ("a", "b")}
    ips = {n: p["status"]["podIP"] for n, p in pods.items()}
    assert ips["a"] != ips["b"]
    assert all(ip.startswith("127.") for ip in ips.values())
    assert {p["spec"]["nodeName"] for p in pods.values()} == {"ferry-local"}
    models = httpx.get(f"http://{ips['a']}:8000/v1/models", timeout=5).json()
    assert models["data"][0]["id"] == f"model-a-{namespace}"

    # restartPolicy Always (the default): the engine of pod a dies, is restarted after a back-off and
    # counted, and the pod comes back Ready on the same address.
    subprocess.run(["pkill", "-KILL", "-f", f"model-a-{namespace}"], check=True)
    restarted = eventually(
        lambda: (p := get_pod(kube, namespace, "a")) and engine_status(p).get("restartCount") == 1 and p,
        "a's engine restarted once",
    )
    assert engine_status(restarted)["lastState"]["terminated"]["exitCode"] == 137  # SIGKILL
    again = wait_ready(kube, namespace, "a")
    assert again["status"]["phase"] == "Running"
    assert again["status"]["podIP"] == ips["a"]

    # restartPolicy Never: the engine of pod b dies and the pod is Failed, never restarted.
    subprocess.run(["pkill", "-KILL", "-f", f"model-b-{namespace}"], check=True)
    failed = eventually(
        lambda: (p := get_pod(kube, namespace, "b")) and p["status"].get("phase") == "Failed" and p,
        "b Failed",
    )
    assert engine_status(failed)["restartCount"] == 0
    assert not is_ready(failed)

    # Deleting pod a stops its engine and the deletion completes (no kubelet would do it otherwise).
    kube.kubectl_run("-n", namespace, "delete", "pod", "a", "--wait=false")
    eventually(lambda: get_pod(kube, namespace, "a") is None, "pod a gone", timeout=60)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{ips['a']}:8000/health", timeout=2)


def test_an_image_outside_the_catalogue_is_never_pulled_nor_ready(
    local_node: Path, kube: KubeEnv, namespace: str
) -> None:
    pod = engine_pod(namespace, "typo", "typo")
    pod["metadata"]["annotations"] = {}
    pod["spec"]["containers"][1]["image"] = "vllm/vllm-opnai:latest"
    apply(kube, pod)
    backoff = eventually(
        lambda: (
            (p := get_pod(kube, namespace, "typo"))
            and engine_status(p).get("state", {}).get("waiting", {}).get("reason") == "ImagePullBackOff"
            and p
        ),
        "ImagePullBackOff",
    )
    assert backoff["status"]["phase"] == "Pending"
    assert not is_ready(backoff)
    assert not backoff["status"].get("podIP")


def test_readiness_gates_hold_ready_until_their_condition_is_true(
    local_node: Path, kube: KubeEnv, namespace: str
) -> None:
    gates = [{"conditionType": "example.com/lb"}]
    pod = engine_pod(namespace, "gated", f"gated-{namespace}", readinessGates=gates)
    pod["metadata"]["annotations"] = {}
    apply(kube, pod)
    running = eventually(
        lambda: (p := get_pod(kube, namespace, "gated")) and engine_status(p).get("ready") and p,
        "the gated pod's engine ready",
    )
    assert not is_ready(running), "Ready before the readiness gate's condition was True"
    gate = {"status": {"conditions": [{"type": "example.com/lb", "status": "True"}]}}
    kube.kubectl_run("-n", namespace, "patch", "pod", "gated", "--subresource=status", "--type=strategic",
                     "-p", json.dumps(gate))  # fmt: skip
    ready = wait_ready(kube, namespace, "gated")
    assert {c["type"] for c in ready["status"]["conditions"]} >= {"example.com/lb", "ContainersReady"}


def test_an_address_something_listens_on_is_never_given_to_a_pod(
    local_node: Path, kube: KubeEnv, namespace: str
) -> None:
    """Another stack's engine (here: a plain server answering 200 on /health) holds addresses: the node
    gives the pod a different one, and the pod's engine is the one that answers there."""
    impostors = []
    for last in range(2, 12):
        sock = socket.socket()
        try:
            sock.bind((f"127.0.0.{last}", 8000))
            sock.listen()
            impostors.append(sock)
        except OSError:  # already taken by someone else on this machine, which proves the point too
            sock.close()
    try:
        pod = engine_pod(namespace, "honest", f"honest-{namespace}")
        pod["metadata"]["annotations"] = {}
        apply(kube, pod)
        ip = wait_ready(kube, namespace, "honest")["status"]["podIP"]
        assert ip not in {s.getsockname()[0] for s in impostors}
        models = httpx.get(f"http://{ip}:8000/v1/models", timeout=5).json()
        assert models["data"][0]["id"] == f"honest-{namespace}"
    finally:
        for sock in impostors:
            sock.close()


def test_a_second_node_of_the_same_name_refuses_to_start(
    local_node: Path, kube: KubeEnv, tmp_path: Path
) -> None:
    """Two nodes named ferry-local on one cluster would both run every pod: the second one sees the
    first renew the node's Lease and exits with the reason; the first keeps its Lease and its pods."""
    holder = lease_holder(kube)
    assert holder, "the running node holds Lease kube-node-lease/ferry-local"
    with pytest.raises(StackError, match="another local node named 'ferry-local' is running"):
        start_node(kube.env, tmp_path)
    assert lease_holder(kube) == holder


def lease_holder(kube: KubeEnv) -> str:
    done = kube.kubectl_run("-n", "kube-node-lease", "get", "lease", "ferry-local", "-o", "json")
    return str(json.loads(done.stdout)["spec"].get("holderIdentity") or "")
