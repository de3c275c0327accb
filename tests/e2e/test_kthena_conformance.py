"""Behaviours Kthena's own end-to-end suite checks on a ModelServing (issue 11), on the real stack.

Each test applies the manifest Kthena's scenario uses (spec/serving.md §8) with kubectl and waits
for the effect the scenario asserts; every service runs as its own process.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from ferry_local.processes import ManagedProcess
from ferry_schemas import labels as L

from tests.e2e.test_servings import WITHIN, pods_of, serving, wait_serving_available
from tests.support.cluster import Cluster, eventually, is_ready
from tests.support.services import ServiceSet

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]
JSON = dict[str, Any]


def image_of(pod: JSON) -> str:
    return str(pod["spec"]["containers"][0]["image"])


def live(cluster: Cluster, name: str) -> dict[str, JSON]:
    return {
        p["metadata"]["name"]: p for p in pods_of(cluster, name) if not p["metadata"].get("deletionTimestamp")
    }


def test_role_partition_protects_a_lost_replica_at_the_old_revision(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    """Kthena's RolePartitionScaleUp: prefill x3, role partition 1, then the protected pod is deleted."""
    name = "role-partition"
    manifest = serving(name, cluster.namespace, 1, roles=("prefill",), image="engine:1")
    manifest["spec"]["rolloutStrategy"] = {"type": "RoleRollingUpdate"}
    manifest["spec"]["template"]["roles"][0].update(replicas=3, partition=1, maxUnavailable=3)
    cluster.apply(manifest)
    initial = wait_serving_available(cluster, manifest)["status"]["updateRevision"]
    pods = [f"{name}-0-prefill-{r}-0" for r in range(3)]

    updated = copy.deepcopy(manifest)
    updated["spec"]["template"]["roles"][0]["entryTemplate"]["spec"]["containers"][0]["image"] = "engine:2"
    cluster.apply(updated)

    def rolled() -> dict[str, str] | None:
        now = live(cluster, name)
        images = {pod: image_of(now[pod]) for pod in pods if pod in now and is_ready(now[pod])}
        want = dict(zip(pods, ["engine:1", "engine:2", "engine:2"], strict=True))
        return images if images == want else None

    eventually(rolled, WITHIN, "prefill-0 kept engine:1 (protected), prefill-1 and -2 rolled to engine:2")
    victim = pods[0]
    before = live(cluster, name)[victim]["metadata"]["uid"]
    cluster.delete("Pod", victim, wait=True)

    def back() -> JSON | None:
        pod = live(cluster, name).get(victim)
        return pod if pod is not None and pod["metadata"]["uid"] != before and is_ready(pod) else None

    recreated = eventually(back, WITHIN, f"{victim} recreated")
    assert image_of(recreated) == "engine:1", "the protected replica must come back at the old image"
    assert recreated["metadata"]["labels"][L.MS_REVISION] == initial
    assert rolled() is not None, "the replicas beyond the partition stay on the new image"


def test_a_template_cannot_override_ferrys_labels_and_status_counts_right(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    name = "label-override"
    manifest = serving(name, cluster.namespace, 2)
    manifest["spec"]["template"]["roles"][0]["entryTemplate"]["metadata"] = {
        "labels": {L.MS_GROUP_NAME: "user-group", L.MS_ROLE_ID: "user-role", L.MS_REVISION: "x", "team": "a"}
    }
    cluster.apply(manifest)
    status = wait_serving_available(cluster, manifest)["status"]
    assert status["availableReplicas"] == status["replicas"] == 2
    for ordinal, pod in enumerate(sorted(live(cluster, name).values(), key=lambda p: p["metadata"]["name"])):
        labels = pod["metadata"]["labels"]
        assert labels[L.MS_GROUP_NAME] == L.group_name(name, ordinal)
        assert labels[L.MS_ROLE_ID] == "leader-0"
        assert labels[L.MS_REVISION] == status["updateRevision"]
        assert labels["team"] == "a"


def test_a_template_server_side_apply_cannot_express_is_served(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    """Kthena's WithDuplicateHostAliases: two hostAliases with one IP pass through unchanged."""
    name = "host-aliases"
    manifest = serving(name, cluster.namespace, 1)
    aliases = [{"ip": "10.1.2.3", "hostnames": ["model-a"]}, {"ip": "10.1.2.3", "hostnames": ["model-b"]}]
    manifest["spec"]["template"]["roles"][0]["entryTemplate"]["spec"]["hostAliases"] = aliases
    cluster.apply(manifest)
    wait_serving_available(cluster, manifest)
    (pod,) = live(cluster, name).values()
    assert pod["spec"]["hostAliases"] == aliases


def test_a_pod_the_api_server_refuses_fails_the_serving_with_its_message_until_fixed(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    name = "refused-pod"
    manifest = serving(name, cluster.namespace, 1)
    container = manifest["spec"]["template"]["roles"][0]["entryTemplate"]["spec"]["containers"][0]
    container["name"] = "Not_A_DNS_Label"  # the CRD takes any string; pod validation does not
    cluster.apply(manifest)
    failed = eventually(
        lambda: cluster.condition_with("ModelServing", name, "Failed"), WITHIN, "Failed=True on the serving"
    )
    assert failed["reason"] == "Invalid"
    assert "Not_A_DNS_Label" in failed["message"]
    assert f"{name}-0-leader-0-0" in failed["message"]  # the API server's own words
    assert not live(cluster, name)

    def refusal_event() -> JSON | None:
        done = cluster.kube.kubectl_run("get", "events.events.k8s.io", "-n", cluster.namespace, "-o", "json")
        return next(
            (
                event
                for event in json.loads(done.stdout)["items"]
                if event.get("type") == "Warning"
                and (event.get("regarding") or {}).get("kind") == "ModelServing"
                and (event.get("regarding") or {}).get("name") == name
                and "Not_A_DNS_Label" in (event.get("note") or "")
            ),
            None,
        )

    event = eventually(refusal_event, WITHIN, "a Warning Event on the ModelServing with the refusal")
    assert event["reason"] == "Invalid"

    container["name"] = "engine"
    cluster.apply(manifest)
    wait_serving_available(cluster, manifest)
    eventually(
        lambda: cluster.condition_with("ModelServing", name, "Failed", "False"), WITHIN, "Failed cleared"
    )


def test_a_leaderworkerset_is_served_as_a_modelserving_and_deleted_with_it(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    """Kthena's LWSAPIBasic: an LWS with replicas 1 and size 2."""
    name = "lws-basic"
    worker = {"spec": {"containers": [{"name": "engine", "image": "engine:1"}]}}
    cluster.apply(
        {
            "apiVersion": L.LWS_API_VERSION,
            "kind": "LeaderWorkerSet",
            "metadata": {"name": name, "namespace": cluster.namespace},
            "spec": {"replicas": 1, "leaderWorkerTemplate": {"size": 2, "workerTemplate": worker}},
        }
    )
    lws = cluster.get("LeaderWorkerSet", name)
    assert lws is not None
    serving_obj = eventually(lambda: cluster.get("ModelServing", name), WITHIN, "the ModelServing of the LWS")
    (ref,) = serving_obj["metadata"]["ownerReferences"]
    assert ref["kind"] == "LeaderWorkerSet"
    assert ref["uid"] == lws["metadata"]["uid"]
    assert ref["controller"] is True
    assert ref["blockOwnerDeletion"] is True

    def ready_pods() -> list[JSON] | None:
        pods = [p for p in live(cluster, name).values() if is_ready(p)]
        return pods if len(pods) == 2 else None

    pods = eventually(ready_pods, WITHIN, "2 ready pods (leader and worker)")
    group_key = hashlib.sha1(f"{name}-0".encode()).hexdigest()
    labels = [p["metadata"]["labels"] for p in pods]
    assert {lbl["leaderworkerset.sigs.k8s.io/worker-index"] for lbl in labels} == {"0", "1"}
    for lbl in labels:
        assert lbl["leaderworkerset.sigs.k8s.io/name"] == name
        assert lbl["leaderworkerset.sigs.k8s.io/group-index"] == "0"
        assert lbl["leaderworkerset.sigs.k8s.io/group-key"] == group_key

    def lws_ready(replicas: int) -> JSON | None:
        status = (cluster.get("LeaderWorkerSet", name) or {}).get("status") or {}
        ready = status.get("readyReplicas") == status.get("replicas") == replicas
        return status if ready else None

    status = eventually(lambda: lws_ready(1), WITHIN, "the LWS status shows 1 ready replica")
    assert (
        status["hpaPodSelector"]
        == f"leaderworkerset.sigs.k8s.io/name={name},leaderworkerset.sigs.k8s.io/worker-index=0"
    )

    # the LWS scale subresource (an HPA's way in) reaches the ModelServing
    cluster.kube.kubectl_run("scale", "leaderworkerset", name, "-n", cluster.namespace, "--replicas=2")
    eventually(lambda: lws_ready(2), WITHIN, "the LWS status shows 2 ready replicas after kubectl scale")
    assert len([p for p in live(cluster, name).values() if is_ready(p)]) == 4

    cluster.delete("LeaderWorkerSet", name)
    eventually(lambda: cluster.get("ModelServing", name) is None, WITHIN, "the ModelServing deleted with it")
    eventually(lambda: not pods_of(cluster, name), WITHIN, "its pods deleted with it")
