"""A gang that cannot be met stays Pending and says why; once the obstacle goes, it runs (issue 10).

On the real local node: a prefill/decode booster whose decode worker requires a node label the node
does not have. The decode pod cannot be placed, so the group's PodGroup (minMember 2) cannot be met
and the prefill pod, which fits, is not bound either — gang scheduling, not per-pod scheduling. Each
pod says why (``PodScheduled`` False, ``Unschedulable``), and the booster is not Active with the
reason in its message. Labelling the node (what a cluster admin would do) lets the whole gang bind
together and the booster becomes Active.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ferry_local.processes import ManagedProcess
from ferry_schemas import labels as L

from tests.support.cluster import Cluster, booster, eventually
from tests.support.services import ServiceSet

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]
JSON = dict[str, Any]
NODE = "ferry-local"
POOL = "ferry.test/pool"
ENGINE = "ghcr.io/volcano-sh/kthena-engine:vllm-ascend_v0.10.1rc1_mooncake_v0.3.5"
WITHIN = 60


def pd_booster(name: str, namespace: str, pool: str) -> JSON:
    """Prefill and decode in one ServingGroup; only the decode worker asks for the ``pool`` nodes."""
    terms = [{"matchExpressions": [{"key": POOL, "operator": "In", "values": [pool]}]}]
    affinity = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
    }

    def worker(kind: str, **extra: Any) -> JSON:
        return {"type": kind, "image": ENGINE, "replicas": 1, "pods": 1,
                "config": {"served-model-name": name, "max-model-len": 1024}, **extra}  # fmt: skip

    manifest = booster(name, namespace)
    manifest["spec"]["backend"].update(
        name=name, type="vLLMDisaggregated", workers=[worker("prefill"), worker("decode", affinity=affinity)]
    )
    return manifest


def scheduled(pod: JSON) -> JSON:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "PodScheduled"), {})


@pytest.fixture
def node_label(cluster: Cluster) -> Iterator[str]:
    """The label value the test's decode worker requires; the node loses the label afterwards."""
    value = cluster.namespace
    try:
        yield value
    finally:
        cluster.kube.kubectl_run("label", "node", NODE, f"{POOL}-", check=False)


def test_a_gang_that_cannot_be_met_stays_pending_until_the_obstacle_goes(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess, node_label: str
) -> None:
    name = "gang"
    cluster.apply(pd_booster(name, cluster.namespace, node_label))
    selector = f"{L.MS_NAME}={name}-{name}"

    def waiting() -> dict[str, JSON] | None:
        pods = {p["metadata"]["labels"].get(L.MS_ROLE, ""): p for p in cluster.list("Pod", selector)}
        if set(pods) != {"prefill", "decode"} or not all(scheduled(p).get("reason") for p in pods.values()):
            return None
        return pods

    pods = eventually(waiting, WITHIN, "both pods reported as unschedulable by the node")
    # the node's verdict on each pod, written in the pass that decided not to bind it
    for role, pod in pods.items():
        assert not pod["spec"].get("nodeName"), f"the {role} pod was bound though its gang cannot be met"
        assert pod["status"].get("phase") == "Pending"
        assert (scheduled(pod)["status"], scheduled(pod)["reason"]) == ("False", "Unschedulable")
    assert "didn't match Pod's node affinity/selector" in scheduled(pods["decode"])["message"]
    assert "1 of its minMember 2 pods can be scheduled" in scheduled(pods["prefill"])["message"]

    def explained() -> JSON | None:
        active = cluster.condition("ModelBooster", name, "Active")
        return active if active and "is Unschedulable" in str(active.get("message")) else None

    active = eventually(explained, WITHIN, "the booster's Active condition to say why it waits")
    assert (active["status"], active["reason"]) == ("False", "ModelProcessing")
    assert f"ModelServing {name}-{name}" in active["message"]
    assert not any(p["spec"].get("nodeName") for p in cluster.list("Pod", selector))

    # the obstacle goes: the node gets the label the decode worker requires
    cluster.kube.kubectl_run("label", "node", NODE, f"{POOL}={node_label}", "--overwrite")
    eventually(lambda: cluster.condition_is("ModelBooster", name, "Active"), WITHIN, "the booster Active")
    running = cluster.list("Pod", selector)
    assert {p["spec"].get("nodeName") for p in running} == {NODE}
    assert all(scheduled(p)["status"] == "True" for p in running)
    active = cluster.condition("ModelBooster", name, "Active")
    assert active is not None
    assert active["reason"] == "ModelAvailable"
