"""Drift repair: every object Ferry owns, deleted or edited by hand, is put back — with no LIST.

A pod edited by hand gets its labels back in place; a pod whose image was changed is replaced from
its revision.

The whole pipeline runs as processes (watcher, converter, applier, status). The watcher publishes
every owned kind, a change re-queues the owner, and the applier reconciles from its view. The last
test counts the API server's own LIST requests (``apiserver_request_total``) across a steady-state
reconcile and fails on any.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from ferry_schemas import labels as L

from tests.support.apimetrics import delta, request_counts
from tests.support.cluster import Cluster, eventually
from tests.support.services import ServiceSet

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
JSON = dict[str, Any]
NAME = "drift"
SERVING = f"{NAME}-main"
GROUP = L.group_name(SERVING, 0)
REPAIR = 60.0
"""Deadline to poll against (the local stack repairs in about a second; CI machines are slower)."""


def drift_booster(namespace: str) -> JSON:
    """One backend with a worker (so the group has a headless Service) and backend autoscaling."""
    return {
        "apiVersion": L.WORKLOAD_API_VERSION,
        "kind": "ModelBooster",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "backend": {
                "name": "main", "type": "vLLM", "modelURI": "hf://Qwen/Qwen2.5-0.5B-Instruct",
                "cacheURI": "hostpath://tmp/cache", "minReplicas": 1, "maxReplicas": 2,
                "workers": [{"type": "server", "image": "vllm/vllm-openai:latest", "replicas": 1, "pods": 2}],
                "autoscalingPolicy": {
                    "metrics": [{"metricName": "kthena:num_requests_waiting", "targetValue": 10}],
                },
            }
        },
    }  # fmt: skip


def owned(cluster: Cluster) -> dict[str, str]:
    """Every object the booster should have: kind → name."""
    pods = sorted(cluster.names("Pod", f"{L.MS_NAME}={SERVING}"))
    services = sorted(cluster.names("Service", f"{L.MS_NAME}={SERVING}"))
    return {
        "ModelServing": SERVING,
        "ModelServer": SERVING,
        "ModelRoute": NAME,
        "AutoscalingPolicy": SERVING,
        "AutoscalingPolicyBinding": SERVING,
        "PodGroup": GROUP,
        "Service": services[0] if services else "",
        "Pod": pods[0] if pods else "",
    }


@pytest.fixture(scope="module")
def deployed(pipeline: ServiceSet, cluster: Cluster) -> dict[str, str]:
    cluster.apply(drift_booster(cluster.namespace))

    def complete() -> dict[str, str] | None:
        objects = owned(cluster)
        return objects if all(name and cluster.get(kind, name) for kind, name in objects.items()) else None

    return eventually(complete, 120, "every child of the booster")


def uid(obj: JSON | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("uid") or "")


KINDS = ["Pod", "Service", "PodGroup", "AutoscalingPolicyBinding", "AutoscalingPolicy", "ModelRoute",
         "ModelServer", "ModelServing"]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_a_child_deleted_by_hand_comes_back(cluster: Cluster, deployed: dict[str, str], kind: str) -> None:
    name = deployed[kind]
    before = uid(cluster.get(kind, name))
    assert before
    cluster.delete(kind, name, wait=True)
    eventually(
        lambda: (obj := cluster.get(kind, name)) is not None and uid(obj) != before,
        REPAIR,
        f"{kind} {name} recreated",
    )


EDITS: list[tuple[str, str, JSON, Any]] = [
    # kind, name, merge patch, how to read the field back
    ("ModelServing", SERVING, {"spec": {"template": {"restartGracePeriodSeconds": 777}}},
     lambda o: o["spec"]["template"].get("restartGracePeriodSeconds")),
    ("ModelRoute", NAME,
     {"spec": {"rules": [{"name": "default", "targetModels": [{"modelServerName": "x"}]}]}},
     lambda o: o["spec"]["rules"][0]["targetModels"][0]["modelServerName"]),
    ("ModelServer", SERVING, {"spec": {"workloadPort": {"port": 9999}}},
     lambda o: o["spec"]["workloadPort"]["port"]),
    ("AutoscalingPolicy", SERVING,
     {"spec": {"metrics": [{"metricName": "kthena:num_requests_waiting", "targetValue": 77}]}},
     lambda o: o["spec"]["metrics"][0]["targetValue"]),
    ("AutoscalingPolicyBinding", SERVING, {"spec": {"homogeneousTarget": {"maxReplicas": 9}}},
     lambda o: o["spec"]["homogeneousTarget"]["maxReplicas"]),
    ("PodGroup", GROUP, {"spec": {"minMember": 9}}, lambda o: o["spec"]["minMember"]),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "name", "patch", "field"), EDITS, ids=[e[0] for e in EDITS])
def test_a_child_edited_by_hand_is_put_back(
    cluster: Cluster, deployed: dict[str, str], kind: str, name: str, patch: JSON, field: Any
) -> None:
    original = eventually(lambda: cluster.get(kind, name), REPAIR, f"{kind} {name}")
    expected = field(original)
    cluster.patch(kind, name, patch)
    eventually(
        lambda: (obj := cluster.get(kind, name)) is not None and field(obj) == expected,
        REPAIR,
        f"{kind} {name} back to {expected!r}",
    )


def test_a_headless_service_edited_by_hand_is_put_back(cluster: Cluster, deployed: dict[str, str]) -> None:
    name = eventually(lambda: owned(cluster)["Service"], REPAIR, "the headless Service")
    cluster.patch("Service", name, {"spec": {"publishNotReadyAddresses": False}})
    eventually(
        lambda: (cluster.get("Service", name) or {}).get("spec", {}).get("publishNotReadyAddresses") is True,
        REPAIR,
        "the Service's publishNotReadyAddresses back",
    )


def labels(obj: JSON | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def current_pod(cluster: Cluster, name: str) -> JSON:
    """Pod ``name`` once it is the current ModelServing's.

    The ModelServing deleted by hand above came back as a new object, and its old pod of the same
    name stays until the garbage collector removes it: on a stack whose kube-controller-manager
    started before Ferry's CRDs were installed, that waits for the collector's next resync (every
    30 s; until then it logs "unable to get REST mapping" for ModelServing). The applier rightly
    leaves a pod that is not its owner's alone, and the collector then replaces it.
    """

    def found() -> JSON | None:
        serving, pod = cluster.get("ModelServing", SERVING), cluster.get("Pod", name)
        refs = ((pod or {}).get("metadata") or {}).get("ownerReferences") or []
        return pod if serving and any(ref.get("uid") == uid(serving) for ref in refs) else None

    return eventually(found, REPAIR, f"pod {name} of the current {SERVING}")


def test_a_pod_whose_labels_were_edited_by_hand_gets_them_back(
    cluster: Cluster, deployed: dict[str, str]
) -> None:
    """Routing and ModelServers select pods by these labels: they are applied again, in place."""
    name = deployed["Pod"]
    pod = current_pod(cluster, name)
    wanted = {key: labels(pod)[key] for key in (L.MS_NAME, L.MS_ROLE, L.MS_REVISION)}
    cluster.patch("Pod", name, {"metadata": {"labels": {L.MS_NAME: None, L.MS_ROLE: "hand-edited"}}})
    # (no check that the labels are gone: the repair can land before kubectl's next read)
    repaired = eventually(
        lambda: (
            (p := cluster.get("Pod", name)) is not None
            and all(labels(p).get(k) == v for k, v in wanted.items())
            and p
        ),
        REPAIR,
        f"pod {name}'s labels back to {wanted}",
    )
    assert uid(repaired) == uid(pod), "the pod was replaced, not repaired"


def test_a_pod_whose_image_was_edited_by_hand_is_replaced_from_its_revision(
    cluster: Cluster, deployed: dict[str, str]
) -> None:
    name = deployed["Pod"]
    pod = current_pod(cluster, name)
    containers = pod["spec"]["containers"]
    original = containers[0]["image"]
    edited = [dict(c) for c in containers]
    edited[0]["image"] = "example.invalid/hand-edited:1"
    cluster.patch("Pod", name, {"spec": {"containers": edited}})
    eventually(
        lambda: (
            (p := cluster.get("Pod", name)) is not None
            and uid(p) != uid(pod)
            and p["spec"]["containers"][0]["image"] == original
        ),
        REPAIR,
        f"pod {name} replaced with image {original}",
    )


def terminating(cluster: Cluster) -> dict[str, list[str]]:
    """Terminating namespaces → what their conditions say is left (content, finalizers, discovery)."""
    listed = json.loads(cluster.kube.kubectl_run("get", "namespaces", "-o", "json").stdout)["items"]
    return {
        ns["metadata"]["name"]: [
            f"{c.get('type')}: {c.get('message')}"
            for c in ns["status"].get("conditions") or []
            if c.get("status") == "True"
        ]
        for ns in listed
        if (ns.get("status") or {}).get("phase") == "Terminating"
    }


def clear_terminating(cluster: Cluster) -> dict[str, list[str]]:
    """Help earlier tests' namespaces go: force-delete their pods and nudge the namespace controller.

    Their pods may be bound to a local node that was stopped, so only a forced delete removes them.
    The namespace controller looks at a namespace again only when it changes (after a 5 s delay), after
    part of its pods' grace period (a booster's is 300 s), or after a back-off that grows with each
    failed attempt (up to 1000 s): an annotation makes it look within 5 s. Returns what is still
    terminating (and what its conditions say).
    """
    left = terminating(cluster)
    for namespace in left:
        cluster.kube.kubectl_run(
            "delete", "pods", "--all", "-n", namespace, "--grace-period=0", "--force", "--wait=false",
            check=False,
        )  # fmt: skip
        cluster.kube.kubectl_run(
            "annotate", "namespace", namespace, f"ferry.test/nudged={time.monotonic():.0f}", "--overwrite",
            check=False,
        )  # fmt: skip
    return left


def test_a_steady_state_reconcile_makes_no_list_request(cluster: Cluster, deployed: dict[str, str]) -> None:
    """A child change re-queues the owner, which reconciles from its view: no LIST of anything."""
    eventually(lambda: cluster.get("ModelRoute", NAME), REPAIR, "the route")
    # the counts are the API server's, every client's: earlier tests' namespaces are deleted without
    # waiting, and the namespace controller LISTs a terminating namespace's content until it is gone
    try:
        eventually(
            lambda: not clear_terminating(cluster), 120, "earlier tests' namespaces deleted", interval=2
        )
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; still terminating: {terminating(cluster)}") from None
    before = request_counts(cluster.kube)
    rule = {"name": "default", "targetModels": [{"modelServerName": "elsewhere"}]}
    cluster.patch("ModelRoute", NAME, {"spec": {"rules": [rule]}})

    def target(route: JSON | None) -> str:
        return str(
            ((route or {}).get("spec") or {}).get("rules", [{}])[0]["targetModels"][0]["modelServerName"]
        )

    eventually(lambda: target(cluster.get("ModelRoute", NAME)) == SERVING, REPAIR, "the route repaired")
    made = delta(request_counts(cluster.kube), before)
    lists = {key: count for key, count in made.items() if key[0] == "LIST"}
    assert lists == {}, f"LIST requests during a steady-state reconcile: {lists}; all requests: {dict(made)}"
    assert made[("PATCH", "modelroutes")] >= 1, made  # the hand edit
    assert made[("APPLY", "modelroutes")] >= 1, made  # the repair (server-side apply)
