"""Talking to the test cluster the way a user does (kubectl).

Pods are scheduled and run by the local node (``ferry_local.node``, the e2e ``kubelet`` fixture);
:meth:`Cluster.mark_ready` patches a pod's status for the few tests that isolate one service.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from ferry_schemas import labels as L

from tests.conftest import KubeEnv

JSON = dict[str, Any]
T = TypeVar("T")

KIND_RESOURCES = {
    "ModelBooster": "modelboosters.workload.serving.volcano.sh",
    "ModelServing": "modelservings.workload.serving.volcano.sh",
    "AutoscalingPolicy": "autoscalingpolicies.workload.serving.volcano.sh",
    "AutoscalingPolicyBinding": "autoscalingpolicybindings.workload.serving.volcano.sh",
    "ModelServer": "modelservers.networking.serving.volcano.sh",
    "ModelRoute": "modelroutes.networking.serving.volcano.sh",
    "ExternalModelProvider": "externalmodelproviders.networking.serving.volcano.sh",
    "Secret": "secrets",
    "PodGroup": "podgroups.scheduling.volcano.sh",
    "Pod": "pods",
    "Service": "services",
    "LeaderWorkerSet": "leaderworkersets.leaderworkerset.x-k8s.io",
}
READY_STATUS = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}


def eventually(check: Callable[[], T | None], within: float, what: str, interval: float = 0.3) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` and the last value."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def load_manifest(path: Path, namespace: str, name: str | None = None) -> JSON:
    """A reference manifest, moved into the test namespace (and optionally renamed)."""
    obj: JSON = yaml.safe_load(path.read_text())
    obj["metadata"]["namespace"] = namespace
    if name:
        obj["metadata"]["name"] = name
    return obj


class Cluster:
    """kubectl against one namespace, returning parsed JSON."""

    def __init__(self, kube: KubeEnv, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def apply(self, obj: JSON) -> None:
        self.kube.kubectl_run("apply", "-n", self.namespace, "-f", "-", input=json.dumps(obj))

    def apply_text(self, text: str, check: bool = True) -> str:
        done = self.kube.kubectl_run("apply", "-n", self.namespace, "-f", "-", input=text, check=check)
        return done.stdout + done.stderr

    def get(self, kind: str, name: str) -> JSON | None:
        done = self.kube.kubectl_run(
            "get", KIND_RESOURCES[kind], name, "-n", self.namespace, "-o", "json", check=False
        )
        if done.returncode != 0:
            if "NotFound" in done.stderr or "not found" in done.stderr:
                return None
            raise AssertionError(done.stderr)
        obj: JSON = json.loads(done.stdout)
        return obj

    def list(self, kind: str, selector: str | None = None) -> list[JSON]:
        args = ["get", KIND_RESOURCES[kind], "-n", self.namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[JSON] = json.loads(self.kube.kubectl_run(*args).stdout)["items"]
        return items

    def names(self, kind: str, selector: str | None = None) -> set[str]:
        return {o["metadata"]["name"] for o in self.list(kind, selector)}

    def delete(self, kind: str, name: str, wait: bool = False) -> None:
        """Delete ``name``; with ``wait``, until that object (its uid) is gone — a controller may
        already have recreated one with the same name, which ``kubectl delete --wait`` can wait on."""
        before = self.get(kind, name)
        self.kube.kubectl_run("delete", KIND_RESOURCES[kind], name, "-n", self.namespace, "--wait=false")
        if wait and before is not None:
            uid = before["metadata"]["uid"]
            eventually(lambda: ((self.get(kind, name) or {}).get("metadata") or {}).get("uid") != uid, 60,
                       f"{kind} {name} ({uid}) deleted")  # fmt: skip

    def patch(self, kind: str, name: str, patch: JSON) -> None:
        self.kube.kubectl_run(
            "patch", KIND_RESOURCES[kind], name, "-n", self.namespace, "--type=merge", "-p", json.dumps(patch)
        )

    def condition(self, kind: str, name: str, type_: str) -> JSON | None:
        obj = self.get(kind, name)
        conditions = ((obj or {}).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c.get("type") == type_), None)

    def condition_with(self, kind: str, name: str, type_: str, status: str = "True") -> JSON | None:
        """The condition when it has ``status``, else None (for :func:`eventually`)."""
        found = self.condition(kind, name, type_)
        return found if found is not None and found.get("status") == status else None

    def condition_is(self, kind: str, name: str, type_: str, status: str = "True") -> bool:
        found = self.condition(kind, name, type_)
        return found is not None and found.get("status") == status

    def mark_ready(self, *pods: JSON) -> None:
        """Patch the pods' status the way a kubelet reports a started, ready container (one kubectl call)."""
        if not pods:
            return
        names = [p["metadata"]["name"] for p in pods]
        self.kube.kubectl_run(
            "patch", "pod", *names, "-n", self.namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps(READY_STATUS), check=False,
        )  # fmt: skip


def is_ready(pod: JSON) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def booster(name: str, namespace: str, replicas: int = 1) -> JSON:
    """A minimal one-backend vLLM ModelBooster (the restart tests and the reconcile benchmark)."""
    return {
        "apiVersion": L.WORKLOAD_API_VERSION,
        "kind": "ModelBooster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backend": {
                "name": "main",
                "type": "vLLM",
                "modelURI": "hf://Qwen/Qwen2.5-0.5B-Instruct",
                "cacheURI": "hostpath://tmp/cache",
                "replicas": replicas,
                "workers": [{"type": "server", "image": "vllm/vllm-openai:latest", "replicas": 1, "pods": 1}],
            }
        },
    }
