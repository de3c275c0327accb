"""ModelServing lifecycle end to end: rolling update, scaling, recovery (issue 5, item 5)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from ferry_local.processes import ManagedProcess
from ferry_schemas import labels as L

from tests.e2e.expectations import expected_pods
from tests.support.cluster import Cluster, eventually, is_ready
from tests.support.services import ServiceSet

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]
JSON = dict[str, Any]
WITHIN = 60


def serving(
    name: str,
    namespace: str,
    replicas: int,
    *,
    image: str = "engine:1",
    roles: tuple[str, ...] = ("leader",),
    recovery: str = "RoleRecreate",
) -> JSON:
    return {
        "apiVersion": L.WORKLOAD_API_VERSION,
        "kind": "ModelServing",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "recoveryPolicy": recovery,
            "rolloutStrategy": {
                "type": "ServingGroupRollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": 1},
            },
            "template": {
                "roles": [
                    {
                        "name": role,
                        "replicas": 1,
                        "workerReplicas": 0,
                        "entryTemplate": {"spec": {"containers": [{"name": "engine", "image": image}]}},
                    }
                    for role in roles
                ]
            },
        },
    }


def pods_of(cluster: Cluster, name: str) -> list[JSON]:
    return cluster.list("Pod", f"{L.MS_NAME}={name}")


def groups_up(manifest: JSON, pods: list[JSON], image: str | None = None) -> set[int]:
    """Ordinals whose every expected pod exists, is Ready (and runs ``image`` when given)."""
    by_name = {p["metadata"]["name"]: p for p in pods if not p["metadata"].get("deletionTimestamp")}
    up = set()
    for ordinal in range(manifest["spec"]["replicas"]):
        group = L.group_name(manifest["metadata"]["name"], ordinal)
        wanted = [n for n in expected_pods(manifest) if n.startswith(f"{group}-")]
        found = [by_name.get(n) for n in wanted]
        if all(p is not None and is_ready(p) for p in found) and (
            image is None or all(p["spec"]["containers"][0]["image"] == image for p in found if p)
        ):
            up.add(ordinal)
    return up


def wait_serving_available(cluster: Cluster, manifest: JSON, image: str | None = None) -> JSON:
    name = manifest["metadata"]["name"]
    want = set(range(manifest["spec"]["replicas"]))
    eventually(
        lambda: groups_up(manifest, pods_of(cluster, name), image) == want, WITHIN, f"{name} groups up"
    )

    def settled() -> JSON | None:
        obj = cluster.get("ModelServing", name)
        status = (obj or {}).get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        ok = (
            conditions.get("Available") == "True"
            and status.get("replicas") == len(want)
            and status.get("availableReplicas") == len(want)
            and status.get("updatedReplicas") == len(want)
            and status.get("observedGeneration") == (obj or {}).get("metadata", {}).get("generation")
        )
        return obj if ok else None

    return eventually(settled, WITHIN, f"{name} status Available with {len(want)} groups")


def test_rolling_update_never_has_more_than_max_unavailable_groups_down(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    before = serving("roll", cluster.namespace, 3, image="engine:1")
    cluster.apply(before)
    old = wait_serving_available(cluster, before)
    after = serving("roll", cluster.namespace, 3, image="engine:2")
    cluster.apply(after)
    worst = 0
    deadline = time.monotonic() + 120
    while True:
        pods = pods_of(cluster, "roll")
        worst = max(worst, 3 - len(groups_up(after, pods)))
        if groups_up(after, pods, image="engine:2") == {0, 1, 2}:
            break
        assert time.monotonic() < deadline, (
            f"the rollout did not finish; pods: {[p['metadata']['name'] for p in pods]}"
        )
        time.sleep(0.1)
    assert worst <= 1, f"{worst} ServingGroups were down at once (maxUnavailable is 1)"
    new = wait_serving_available(cluster, after, image="engine:2")
    assert new["status"]["updateRevision"] != old["status"]["updateRevision"]
    assert new["status"]["currentRevision"] == new["status"]["updateRevision"]


def test_scale_three_to_one_to_two(pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess) -> None:
    def pod_names(name: str) -> set[str]:
        return {p["metadata"]["name"] for p in pods_of(cluster, name)}

    manifest = serving("scale", cluster.namespace, 3)
    cluster.apply(manifest)
    wait_serving_available(cluster, manifest)
    # through the scale subresource, like an autoscaler
    cluster.kube.kubectl_run("scale", "modelserving", "scale", "-n", cluster.namespace, "--replicas=1")
    down = {**manifest, "spec": {**manifest["spec"], "replicas": 1}}
    eventually(
        lambda: pod_names("scale") == expected_pods(down), WITHIN, "only group 0 (highest ordinals go first)"
    )
    wait_serving_available(cluster, down)
    cluster.kube.kubectl_run("scale", "modelserving", "scale", "-n", cluster.namespace, "--replicas=2")
    up = {**manifest, "spec": {**manifest["spec"], "replicas": 2}}
    eventually(
        lambda: pod_names("scale") == expected_pods(up), WITHIN, "groups 0 and 1 (lowest missing ordinal)"
    )
    wait_serving_available(cluster, up)


@pytest.mark.parametrize(
    ("policy", "sibling_recreated"),
    [("RoleRecreate", False), ("ServingGroupRecreate", True)],
)
def test_deleted_pod_is_recreated_per_recovery_policy(
    policy: str, sibling_recreated: bool, pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    name = f"rec-{policy.lower()}"
    manifest = serving(name, cluster.namespace, 1, roles=("prefill", "decode"), recovery=policy)
    cluster.apply(manifest)
    wait_serving_available(cluster, manifest)
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods_of(cluster, name)}
    victim, sibling = f"{name}-0-prefill-0-0", f"{name}-0-decode-0-0"
    cluster.delete("Pod", victim, wait=True)

    def recreated() -> bool:
        now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods_of(cluster, name)}
        victim_new = victim in now and now[victim] != uids[victim]
        sibling_new = sibling in now and now[sibling] != uids[sibling]
        return victim_new and sibling_new == sibling_recreated

    try:
        eventually(recreated, WITHIN, f"{victim} recreated ({policy}: sibling recreated={sibling_recreated})")
    except AssertionError as exc:
        now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods_of(cluster, name)}
        raise AssertionError(f"{exc}; pod uids before {uids}, now {now}") from None
    wait_serving_available(cluster, manifest)
    final = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods_of(cluster, name)}
    assert (final[sibling] != uids[sibling]) == sibling_recreated
