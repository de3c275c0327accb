"""A ModelServer selects pods of any owner (Kthena's rule): a plain Deployment of mock engines,
applied with ``kubectl``, is routed to through the real watcher and router on the local node."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from ferry_local.system import SystemInfo
from openai import APIStatusError, OpenAI

from tests.conftest import KubeEnv

pytestmark = pytest.mark.e2e

SERVED = "org/sim-model"


def deployment(namespace: str, replicas: int) -> dict[str, Any]:
    labels = {"app": "sim-engine"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "sim", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "engine", "image": "ghcr.io/llm-d/llm-d-inference-sim:latest",
                    "args": ["--model", SERVED, "--port", "8000"],
                }]},
            },
        },
    }  # fmt: skip


def networking(namespace: str) -> list[dict[str, Any]]:
    group = "networking.serving.volcano.sh/v1alpha1"
    return [
        {"apiVersion": group, "kind": "ModelServer", "metadata": {"name": "sim", "namespace": namespace},
         "spec": {"workloadSelector": {"matchLabels": {"app": "sim-engine"}}, "workloadPort": {"port": 8000},
                  "inferenceEngine": "vLLM", "model": SERVED}},
        {"apiVersion": group, "kind": "ModelRoute", "metadata": {"name": "sim", "namespace": namespace},
         "spec": {"modelName": "sim", "rules": [{"targetModels": [{"modelServerName": "sim"}]}]}},
    ]  # fmt: skip


def apply(kube: KubeEnv, obj: dict[str, Any]) -> None:
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(obj))


def served_by(client: OpenAI, seen: set[str], want: int, within: float) -> set[str]:
    """Chat until ``want`` distinct engines answered (the mock engine names its pod in the answer)."""
    deadline = time.monotonic() + within
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            answer = client.chat.completions.create(
                # a fresh 64-byte prompt prefix each time, so prefix-cache affinity does not pin one pod
                model="sim",
                messages=[{"role": "user", "content": f"{uuid.uuid4().hex * 2} hi"}],
                max_tokens=8,
            )
            text = answer.choices[0].message.content or ""
            seen.add(text.split(" via ", 1)[1].split()[0] if " via " in text else text)
            if len(seen) >= want:
                return seen
        except APIStatusError as exc:  # 404/503 until the route and the pods arrive
            last = exc
            time.sleep(0.3)
    raise AssertionError(f"only {sorted(seen)} answered within {within}s (last error: {last})")


def test_deployment_pods_selected_by_a_model_server_are_routed(
    ferry: SystemInfo, kube: KubeEnv, e2e_namespace: str
) -> None:
    for obj in (*networking(e2e_namespace), deployment(e2e_namespace, 2)):
        apply(kube, obj)
    client = OpenAI(base_url=f"{ferry.router_url}/v1", api_key="test", timeout=30, max_retries=0)
    try:
        engines = served_by(client, set(), 2, within=120)
    except AssertionError:  # say whether the pods ran and were Ready, or the router missed one
        shown = kube.kubectl_run("-n", e2e_namespace, "get", "pods", "-o", "json", check=False)
        for pod in json.loads(shown.stdout or '{"items": []}')["items"]:
            status = pod.get("status") or {}
            conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
            print(pod["metadata"]["name"], status.get("phase"), status.get("podIP"), conditions)
        raise
    assert all(name.startswith(f"{e2e_namespace}/sim-") for name in engines), engines

    # scale down: the router follows the Deployment's pods, and traffic keeps flowing to the one left
    apply(kube, deployment(e2e_namespace, 1))

    def remaining() -> set[str]:
        pods = json.loads(kube.kubectl_run("-n", e2e_namespace, "get", "pods", "-l", "app=sim-engine",
                                           "-o", "json").stdout)["items"]  # fmt: skip
        return {f"{e2e_namespace}/{p['metadata']['name']}" for p in pods}

    deadline = time.monotonic() + 60
    while len(remaining()) != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    (survivor,) = remaining()
    # once the router has dropped the deleted pod, every answer comes from the survivor
    deadline = time.monotonic() + 30
    while True:
        answers = {next(iter(served_by(client, set(), 1, within=30))) for _ in range(6)}
        if answers == {survivor} or time.monotonic() > deadline:
            break
    assert answers == {survivor}
