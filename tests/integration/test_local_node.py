"""The local node binds gangs, runs engines, reports readiness and failure, and finishes deletion."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ferry_local.system import start_node

from tests.conftest import KubeEnv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_node(kube: KubeEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    logs = tmp_path_factory.mktemp("node")
    process = start_node(kube.env, logs)
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


def engine_pod(namespace: str, name: str, model: str) -> dict[str, Any]:
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
        },
    }


def is_ready(pod: dict[str, Any] | None) -> bool:
    conditions = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_ready(kube: KubeEnv, namespace: str, name: str) -> dict[str, Any]:
    def ready_pod() -> dict[str, Any] | None:
        pod = get_pod(kube, namespace, name)
        return pod if is_ready(pod) else None

    pod: dict[str, Any] = eventually(ready_pod, f"pod {name} Ready")
    return pod


def test_gang_binding_readiness_failure_and_deletion(local_node: Path, kube: KubeEnv, namespace: str) -> None:
    podgroup = {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": "gang", "namespace": namespace},
        "spec": {"minMember": 2},
    }
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(podgroup))
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(engine_pod(namespace, "a", f"model-a-{namespace}")))
    time.sleep(3)
    lonely = get_pod(kube, namespace, "a")
    assert lonely is not None
    assert not lonely["spec"].get("nodeName"), "a pod was bound before its gang's minMember was met"

    kube.kubectl_run("apply", "-f", "-", input=json.dumps(engine_pod(namespace, "b", f"model-b-{namespace}")))
    pods = {name: wait_ready(kube, namespace, name) for name in ("a", "b")}
    ips = {n: p["status"]["podIP"] for n, p in pods.items()}
    assert ips["a"] != ips["b"]
    assert all(ip.startswith("127.") for ip in ips.values())
    assert {p["spec"]["nodeName"] for p in pods.values()} == {"ferry-local"}
    models = httpx.get(f"http://{ips['a']}:8000/v1/models", timeout=5).json()
    assert models["data"][0]["id"] == f"model-a-{namespace}"

    # The engine of pod a dies: the pod is reported Failed.
    subprocess.run(["pkill", "-f", f"model-a-{namespace}"], check=True)
    eventually(
        lambda: (get_pod(kube, namespace, "a") or {}).get("status", {}).get("phase") == "Failed", "a Failed"
    )

    # Deleting pod b stops its engine and the deletion completes (no kubelet would do it otherwise).
    kube.kubectl_run("-n", namespace, "delete", "pod", "b", "--wait=false")
    eventually(lambda: get_pod(kube, namespace, "b") is None, "pod b gone", timeout=60)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{ips['b']}:8000/health", timeout=2)
