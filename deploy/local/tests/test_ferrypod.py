"""Ferry-image pods on the local node: which pods they are, readiness from the probe, env expansion."""

from __future__ import annotations

import pytest
from ferry_local.node.ferrypod import _expand, _readiness, ferry_container, image_repository


@pytest.mark.parametrize(
    ("image", "repository"),
    [("ferry:dev", "ferry"), ("registry.example:5000/team/ferry:1.2", "registry.example:5000/team/ferry"),
     ("ferry@sha256:abc", "ferry"), ("ferry", "ferry")],
)  # fmt: skip
def test_image_repository(image: str, repository: str) -> None:
    assert image_repository(image) == repository


def test_only_ferrys_image_is_run_as_a_ferry_service(monkeypatch: pytest.MonkeyPatch) -> None:
    pod = {"spec": {"containers": [{"name": "engine", "image": "vllm/vllm-openai:latest"}]}}
    assert ferry_container(pod) is None
    pod["spec"]["containers"].append({"name": "watcher", "image": "ferry:dev", "command": ["ferry-watcher"]})
    assert ferry_container(pod) == {"name": "watcher", "image": "ferry:dev", "command": ["ferry-watcher"]}
    monkeypatch.setenv("FERRY_NODE_FERRY_IMAGES", "registry.example/ferry")
    assert ferry_container(pod) is None


def test_readiness_follows_the_probe_and_resolves_named_ports() -> None:
    container = {
        "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}},
    }
    assert _readiness(container) == ("/readyz", 9090)
    assert _readiness({"readinessProbe": {"httpGet": {"port": 81}}}) == ("/healthz", 81)


def test_dependent_variables_expand_like_the_kubelets() -> None:
    env = {"POD_NAME": "p-1", "POD_NAMESPACE": "ns"}
    assert _expand("k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)", env) == (
        "k8s.pod.name=p-1,k8s.namespace.name=ns"
    )
