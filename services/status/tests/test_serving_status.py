from typing import Any

from ferry_schemas.workload import serving_revision
from ferry_status.booster_status import unschedulable
from ferry_status.lws_status import compute_lws_status, serving_of
from ferry_status.outcome import Outcome
from ferry_status.serving_status import (
    compute_serving_status,
    label_selector,
    pod_kept,
    pod_ready,
    resolve_int_or_percent,
    revision_of,
    serving_kept,
)

T0 = "2026-01-01T00:00:00Z"


def serving(replicas: int = 2, workers: int = 0, partition: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "template": {"roles": [{"name": "prefill", "replicas": 1, "workerReplicas": workers}]},
    }
    if partition is not None:
        spec["rolloutStrategy"] = {"rollingUpdateConfiguration": {"partition": partition}}
    return {"metadata": {"name": "ms", "namespace": "ns", "uid": "u1", "generation": 3}, "spec": spec}


def pod(group: int, index: int = 0, *, ready: bool, revision: str = "r1") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running" if ready else "Pending"}
    if ready:
        status["conditions"] = [{"type": "Ready", "status": "True"}]
    return {
        "metadata": {
            "name": f"ms-{group}-prefill-0-{index}",
            "labels": {
                "modelserving.volcano.sh/name": "ms",
                "modelserving.volcano.sh/group-name": f"ms-{group}",
                "modelserving.volcano.sh/role": "prefill",
                "modelserving.volcano.sh/role-id": "prefill-0",
                "modelserving.volcano.sh/revision": revision,
            },
        },
        "status": status,
    }


def test_all_groups_ready_is_available() -> None:
    status = compute_serving_status(serving(), [pod(0, ready=True), pod(1, ready=True)], "r1", at=T0)
    assert status["replicas"] == status["availableReplicas"] == status["updatedReplicas"] == 2
    assert status["currentReplicas"] == 2
    assert status["currentRevision"] == status["updateRevision"] == "r1"
    assert status["observedGeneration"] == 3
    assert [c["type"] for c in status["conditions"] if c["status"] == "True"] == ["Available"]
    assert status["labelSelector"] == label_selector("ms", serving()["spec"]["template"]["roles"])


def test_missing_group_and_unready_pod_are_progressing() -> None:
    status = compute_serving_status(
        serving(replicas=3), [pod(0, ready=True), pod(1, ready=False)], "r1", at=T0
    )
    assert status["replicas"] == 2
    assert status["availableReplicas"] == 1
    (cond,) = status["conditions"]
    assert cond["type"] == "Progressing"
    assert cond["message"] == "Some groups is progressing: [1 2]"


def test_worker_count_must_match_exactly() -> None:
    pods = [pod(0, 0, ready=True)]  # one worker missing
    status = compute_serving_status(serving(replicas=1, workers=1), pods, "r1", at=T0)
    assert status["availableReplicas"] == 0
    pods.append(pod(0, 1, ready=True))
    assert compute_serving_status(serving(replicas=1, workers=1), pods, "r1", at=T0)["availableReplicas"] == 1


def test_rolling_update_reports_update_in_progress_and_old_revision() -> None:
    pods = [pod(0, ready=True, revision="r2"), pod(1, ready=False, revision="r1")]
    status = compute_serving_status(serving(), pods, "r2", at=T0)
    assert status["updatedReplicas"] == 1
    assert status["currentReplicas"] == 1
    assert status["currentRevision"] == "r1"
    assert status["updateRevision"] == "r2"
    assert status["conditions"][0]["type"] == "UpdateInProgress"
    assert status["conditions"][0]["message"].endswith("Updated Groups are: [0]")


def test_partition_resolution() -> None:
    assert resolve_int_or_percent("50%", 3, round_up=True) == 2
    assert resolve_int_or_percent("50%", 3, round_up=False) == 1
    assert resolve_int_or_percent(None, 3, round_up=True) == 0
    assert resolve_int_or_percent(2, 3, round_up=True) == 2


def test_the_group_and_role_come_from_the_pod_name_not_relabelled_labels() -> None:
    relabelled = [pod(0, ready=True), pod(1, ready=True)]
    for p in relabelled:
        labels = p["metadata"]["labels"]
        for key in ("group-name", "role", "role-id"):
            labels[f"modelserving.volcano.sh/{key}"] = "user-value"
    status = compute_serving_status(serving(), relabelled, "r1", at=T0)
    assert status["replicas"] == status["availableReplicas"] == 2


def test_a_refused_pod_shows_as_failed_with_the_api_servers_message_until_fixed() -> None:
    refused = Outcome(True, 'Pod "ms-0-prefill-0-0" is invalid: spec.containers[0].name', False, "Invalid")
    status = compute_serving_status(serving(), [], "r1", outcome=refused, at=T0)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True"
    assert failed["reason"] == "Invalid"
    assert "is invalid" in failed["message"]
    fixed = {**serving(), "status": status}
    ready = [pod(0, ready=True), pod(1, ready=True)]
    status = compute_serving_status(fixed, ready, "r1", outcome=Outcome(False, "", True), at=T0)
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Failed"]["status"] == "False"
    assert by_type["Available"]["status"] == "True"


def test_a_leaderworkerset_reports_its_servings_groups() -> None:
    lws = {"metadata": {"name": "ms", "uid": "lws-uid"}}
    owned = {
        "metadata": {"name": "ms", "ownerReferences": [{"uid": "lws-uid", "controller": True}]},
        "status": {"replicas": 2, "availableReplicas": 1, "updatedReplicas": 2},
    }
    stranger = {"metadata": {"name": "ms", "ownerReferences": [{"uid": "other", "controller": True}]}}
    assert serving_of(lws, [stranger]) is None
    assert serving_of(lws, [stranger, owned]) is owned
    leaders = "leaderworkerset.sigs.k8s.io/name=ms,leaderworkerset.sigs.k8s.io/worker-index=0"
    assert compute_lws_status(lws, owned) == {
        "replicas": 2,
        "readyReplicas": 1,
        "updatedReplicas": 2,
        "hpaPodSelector": leaders,
    }
    assert compute_lws_status(lws, None)["readyReplicas"] == 0


def test_the_view_keeps_of_a_pod_what_status_reads() -> None:
    waiting = pod(1, ready=False)
    waiting["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "gang of 2"}
    ]
    full = [pod(0, ready=True), waiting]
    for p in full:
        p["spec"] = {"containers": [{"name": "engine", "image": "vllm", "env": [{"name": "A"}] * 20}]}
        p["status"]["containerStatuses"] = [{"name": "engine", "restartCount": 0}]
    kept = [pod_kept(p) for p in full]
    assert all("spec" not in p and "containerStatuses" not in p["status"] for p in kept)
    assert [pod_ready(p) for p in kept] == [pod_ready(p) for p in full] == [True, False]
    assert unschedulable(kept) == unschedulable(full) == "pod ms-1-prefill-0-0 is Unschedulable: gang of 2"
    assert compute_serving_status(serving(), kept, "r1", at=T0) == compute_serving_status(
        serving(), full, "r1", at=T0
    )


def test_the_view_keeps_of_a_modelserving_what_status_reads_and_its_roles_revision() -> None:
    full = serving(replicas=2, workers=1, partition=1)
    template = {"spec": {"containers": [{"name": "engine", "image": "vllm", "env": [{"name": "A"}] * 20}]}}
    full["spec"]["template"]["roles"][0] |= {"entryTemplate": template, "workerTemplate": template}
    full["status"] = {"replicas": 1}
    kept = serving_kept(full)
    assert kept["spec"]["template"]["roles"] == [{"name": "prefill", "replicas": 1, "workerReplicas": 1}]
    assert kept["status"] == full["status"]
    assert kept["metadata"] == full["metadata"]
    assert revision_of(kept) == revision_of(full) == serving_revision(full["spec"]["template"]["roles"])
    edited = serving(replicas=2, workers=1, partition=1)
    edited["spec"]["template"]["roles"][0] |= {"entryTemplate": {"spec": {}}, "workerTemplate": template}
    assert revision_of(serving_kept(edited)) != revision_of(kept)  # a template edit is a new revision
    pods = [pod(0, 0, ready=True, revision=revision_of(kept)), pod(0, 1, ready=False)]
    assert compute_serving_status(kept, pods, revision_of(kept), at=T0) == compute_serving_status(
        full, pods, revision_of(full), at=T0
    )
