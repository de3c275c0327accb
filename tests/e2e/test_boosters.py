"""ModelBoosters from the reference examples, end to end through every service (issue 5, item 5)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from ferry_local.paths import shared_dir
from ferry_local.processes import ManagedProcess
from ferry_schemas.runtime.spans import read_spans, traces_by_id

from tests.e2e.expectations import (
    assert_booster_child_labels,
    assert_owned_by,
    backends_of,
    expected_pod_groups,
    expected_pods,
)
from tests.support.cluster import Cluster, eventually, load_manifest
from tests.support.services import ServiceSet

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

EXAMPLES = shared_dir() / "reference" / "kthena" / "head" / "examples" / "model-booster"
PD_EXAMPLES = [
    "prefill-decode-disaggregation.yaml",  # the booster seed 004 documents
    "nixl-pd-disaggregation.yaml",
    "lmcache-pd-disaggregation.yaml",
]
JSON = dict[str, Any]
WITHIN = 60


def wait_children(cluster: Cluster, booster: JSON) -> dict[str, JSON]:
    """Every ModelServing/ModelServer of the booster, plus its ModelRoute, checked for labels and owner."""
    name = booster["metadata"]["name"]
    children: dict[str, JSON] = {}
    for backend in backends_of(booster):
        child = f"{name}-{backend['name']}"
        for kind in ("ModelServing", "ModelServer"):
            obj = eventually(lambda k=kind, c=child: cluster.get(k, c), WITHIN, f"{kind} {child}")
            assert_owned_by(obj, booster)
            assert_booster_child_labels(obj, booster, backend["name"])
            children[f"{kind}/{child}"] = obj
    route = eventually(lambda: cluster.get("ModelRoute", name), WITHIN, f"ModelRoute {name}")
    assert_owned_by(route, booster)
    assert_booster_child_labels(route, booster, "")
    children[f"ModelRoute/{name}"] = route
    return children


def wait_workload(cluster: Cluster, serving: JSON) -> None:
    """Pods and PodGroups exist as the serving spec says, owned by the ModelServing."""
    selector = f"modelserving.volcano.sh/name={serving['metadata']['name']}"
    want = expected_pods(serving)
    eventually(lambda: cluster.names("Pod", selector) == want or None, WITHIN, f"pods {sorted(want)}")
    for pod in cluster.list("Pod", selector):
        assert_owned_by(pod, serving)
    groups = expected_pod_groups(serving)
    eventually(
        lambda: cluster.names("PodGroup", selector) == set(groups) or None, WITHIN, f"PodGroups {groups}"
    )
    for group in cluster.list("PodGroup", selector):
        assert group["spec"]["minMember"] == groups[group["metadata"]["name"]]
        assert_owned_by(group, serving)


def wait_active(cluster: Cluster, name: str) -> JSON:
    eventually(lambda: cluster.condition_is("ModelBooster", name, "Active"), WITHIN, f"booster {name} Active")
    booster = cluster.get("ModelBooster", name)
    assert booster is not None
    return booster


@pytest.mark.parametrize("example", [*PD_EXAMPLES, "Qwen2.5-0.5B-Instruct.yaml"])
def test_reference_booster_becomes_active(
    example: str, pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    manifest = load_manifest(EXAMPLES / example, cluster.namespace)
    cluster.apply(manifest)
    name = manifest["metadata"]["name"]
    booster = eventually(lambda: cluster.get("ModelBooster", name), WITHIN, "the booster")
    children = wait_children(cluster, booster)
    for key, serving in children.items():
        if key.startswith("ModelServing/"):
            wait_workload(cluster, serving)
    booster = wait_active(cluster, name)
    status = booster["status"]
    assert cluster.condition_is("ModelBooster", name, "Initialized")
    assert not cluster.condition_is("ModelBooster", name, "Failed")
    assert status["observedGeneration"] == booster["metadata"]["generation"]
    servings = [c for k, c in children.items() if k.startswith("ModelServing/")]
    total = sum(int(s["spec"].get("replicas", 1)) for s in servings)
    # the seed-004 counts
    assert status["replicas"] == status["availableReplicas"] == status["updatedReplicas"] == total
    assert status["currentReplicas"] == total
    if example in PD_EXAMPLES:
        assert cluster.condition_is("ModelBooster", name, "Disaggregated")
    for serving in servings:
        assert cluster.condition_is("ModelServing", serving["metadata"]["name"], "Available")
    shown = cluster.kube.kubectl_run("get", "modelbooster", name, "-n", cluster.namespace).stdout
    assert name in shown
    assert "True" in shown.splitlines()[1], f"the Active column should say True:\n{shown}"


def multi_backend_booster(namespace: str) -> JSON:
    """Two vLLM backends with LoRA adapters, route weights and backend-level autoscaling (seed 002)."""

    def backend(name: str, weight: int, adapter: str) -> JSON:
        return {
            "name": name, "type": "vLLM", "modelURI": f"hf://example/{name}", "cacheURI": "hostpath:///tmp/cache",
            "minReplicas": 1, "maxReplicas": 3, "routeWeight": weight,
            "workers": [{"type": "server", "image": "vllm/vllm-openai:latest", "pods": 1, "replicas": 1}],
            "loraAdapters": [{"name": adapter, "artifactURL": f"hf://example/{adapter}"}],
            "autoscalingPolicy": {
                "metrics": [{"metricName": "kthena:num_requests_waiting", "targetValue": 10}],
                "tolerancePercent": 10,
            },
        }  # fmt: skip

    return {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelBooster",
        "metadata": {"name": "multi", "namespace": namespace},
        "spec": {"backends": [backend("alpha", 40, "lora-sql"), backend("beta", 60, "lora-chat")]},
    }


def test_multi_backend_booster_with_lora_and_backend_autoscaling(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    cluster.apply(multi_backend_booster(cluster.namespace))
    booster = eventually(lambda: cluster.get("ModelBooster", "multi"), WITHIN, "the booster")
    children = wait_children(cluster, booster)
    assert {k for k in children if k.startswith("ModelServing/")} == {
        "ModelServing/multi-alpha",
        "ModelServing/multi-beta",
    }
    route = children["ModelRoute/multi"]
    targets = [t for rule in route["spec"]["rules"] for t in rule.get("targetModels") or []]
    weights = {t["modelServerName"]: t.get("weight") for t in targets}
    assert weights == {"multi-alpha": 40, "multi-beta": 60}
    assert set(route["spec"].get("loraAdapters") or []) == {"lora-sql", "lora-chat"}
    for name in ("multi-alpha", "multi-beta"):
        policy = eventually(lambda n=name: cluster.get("AutoscalingPolicy", n), WITHIN, f"policy {name}")
        binding = eventually(
            lambda n=name: cluster.get("AutoscalingPolicyBinding", n), WITHIN, f"binding {name}"
        )
        assert_owned_by(policy, booster)
        assert_owned_by(binding, booster)
    assert cluster.get("AutoscalingPolicy", "multi") is None, "no model-level policy was asked for"
    wait_active(cluster, "multi")


def test_refused_booster_fails_with_the_message_and_recovers(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    fixed = load_manifest(EXAMPLES / "nixl-pd-disaggregation.yaml", cluster.namespace, name="broken")
    broken = copy.deepcopy(fixed)
    # the CRD accepts a disaggregated backend without a decode worker; the converter cannot build it
    broken["spec"]["backend"]["workers"] = [
        w for w in broken["spec"]["backend"]["workers"] if w["type"] != "decode"
    ]
    cluster.apply(broken)

    failed = eventually(lambda: cluster.condition_with("ModelBooster", "broken", "Failed"), WITHIN, "Failed")
    assert "decode" in failed["message"], failed
    assert not cluster.condition_is("ModelBooster", "broken", "Active")
    assert cluster.names("ModelServing", "workload.serving.volcano.sh/model-name=broken") == set()

    cluster.apply(fixed)
    eventually(
        lambda: cluster.condition_is("ModelBooster", "broken", "Failed", "False"), WITHIN, "Failed cleared"
    )
    wait_active(cluster, "broken")


def test_deleting_a_booster_removes_children_and_pods_through_gc(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    manifest = load_manifest(EXAMPLES / "Qwen2.5-0.5B-Instruct.yaml", cluster.namespace, name="doomed")
    cluster.apply(manifest)
    booster = eventually(lambda: cluster.get("ModelBooster", "doomed"), WITHIN, "the booster")
    children = wait_children(cluster, booster)
    wait_workload(cluster, children["ModelServing/doomed-backend1"])
    cluster.delete("ModelBooster", "doomed")

    def all_gone() -> bool:
        selector = "workload.serving.volcano.sh/model-name=doomed"
        left = [cluster.names(k, selector) for k in ("ModelServing", "ModelServer", "ModelRoute")]
        pods = cluster.names("Pod", "modelserving.volcano.sh/name=doomed-backend1")
        groups = cluster.names("PodGroup", "modelserving.volcano.sh/name=doomed-backend1")
        return not any(left) and not pods and not groups

    eventually(all_gone, 90, "every child, pod and PodGroup of the deleted booster to be collected")


def test_one_trace_spans_all_four_services(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    manifest = load_manifest(EXAMPLES / "Qwen2.5-0.5B-Instruct.yaml", cluster.namespace, name="traced")
    cluster.apply(manifest)
    wait_active(cluster, "traced")
    trace_file = Path(pipeline.env["FERRY_TRACE_FILE"])
    want = {"ferry-watcher", "ferry-converter", "ferry-applier", "ferry-status"}

    def complete_trace() -> list[JSON] | None:
        for spans in traces_by_id(read_spans(trace_file)).values():
            roots = [s for s in spans if not s["parentSpanId"]]
            if not any(r["attributes"].get("ferry.object.name") == "traced" for r in roots):
                continue
            if {s["service"] for s in spans} >= want:
                return spans
        return None

    spans = eventually(complete_trace, 30, "one trace with spans of watcher, converter, applier and status")
    (root,) = [s for s in spans if not s["parentSpanId"]]
    assert root["service"] == "ferry-watcher"
    assert root["attributes"]["ferry.resource"] == "modelboosters"
