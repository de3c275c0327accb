"""Kthena's TestConstructModelServing (spec/serving.md §7.3): LeaderWorkerSet → ModelServing."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from ferry_converter.desired import desired_set
from ferry_converter.lws import convert_lws
from ferry_converter.serving.convert import convert_serving
from ferry_schemas import labels as L
from ferry_schemas.bus import ObjectEvent, Resource
from ferry_schemas.workload import (
    LWS_GROUP_INDEX,
    LWS_GROUP_KEY,
    LWS_NAME,
    LWS_WORKER_INDEX,
    render_group,
)

WORKER = {
    "metadata": {"labels": {"app": "w"}, "annotations": {"a": "1"}},
    "spec": {"containers": [{"name": "w"}]},
}
LEADER = {"metadata": {"labels": {"app": "l"}}, "spec": {"containers": [{"name": "l"}]}}


def lws(*, replicas: int | None = None, size: int | None = None, leader: bool = False) -> dict[str, Any]:
    template: dict[str, Any] = {"workerTemplate": WORKER}
    if size is not None:
        template["size"] = size
    if leader:
        template["leaderTemplate"] = LEADER
    spec: dict[str, Any] = {"leaderWorkerTemplate": template}
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": L.LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "lws", "namespace": "ns", "uid": "u-lws", "generation": 2},
        "spec": spec,
    }


def role_of(obj: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    (serving,), errors = convert_lws(obj)
    assert errors == []
    assert serving["metadata"] == {"name": "lws", "namespace": "ns"}
    assert serving["spec"]["plugins"] == [{"name": "lws-standard-labels", "type": "BuiltIn"}]
    (role,) = serving["spec"]["template"]["roles"]
    assert role["name"] == "default"
    assert role["replicas"] == 1
    return serving["spec"]["replicas"], role


def test_defaults_give_one_group_of_one_pod_from_the_worker_template() -> None:
    replicas, role = role_of(lws())
    assert replicas == 1
    assert role["workerReplicas"] == 0
    assert role["entryTemplate"] == role["workerTemplate"] == WORKER


@pytest.mark.parametrize(("size", "workers"), [(4, 3), (2, 1), (1, 0), (0, 0)])
def test_size_counts_the_leader(size: int, workers: int) -> None:
    replicas, role = role_of(lws(replicas=3, size=size))
    assert replicas == 3
    assert role["workerReplicas"] == workers


def test_a_leader_template_becomes_the_entry_template_with_its_labels_and_annotations() -> None:
    _, role = role_of(lws(size=2, leader=True))
    assert role["entryTemplate"] == LEADER
    assert role["workerTemplate"] == WORKER
    assert role["workerReplicas"] == 1


def test_without_a_worker_template_the_set_fails_with_the_field() -> None:
    obj = lws()
    del obj["spec"]["leaderWorkerTemplate"]["workerTemplate"]
    children, errors = convert_lws(obj)
    assert children == []
    assert errors[0].field == "spec.leaderWorkerTemplate.workerTemplate"


def test_the_desired_set_is_one_modelserving_owned_by_the_lws() -> None:
    event = ObjectEvent.from_object("ADDED", Resource.LEADER_WORKER_SETS, lws(size=2))
    desired = desired_set(event)
    assert desired.owner.kind == "LeaderWorkerSet"
    assert desired.owner.api_version == L.LWS_API_VERSION
    assert desired.owner.generation == 2
    assert desired.owner.owner_reference()["blockOwnerDeletion"] is True
    assert [c["kind"] for c in desired.children] == ["ModelServing"]
    assert desired.owner_selector == {}  # one child named like the owner: nothing to prune
    tombstone = desired_set(ObjectEvent.from_object("DELETED", Resource.LEADER_WORKER_SETS, lws()))
    assert tombstone.deleted


def test_its_pods_carry_the_lws_labels() -> None:
    (serving,), _ = convert_lws(lws(size=2))
    serving["metadata"] |= {"uid": "u-ms", "ownerReferences": [{"kind": "LeaderWorkerSet", "name": "lws"}]}
    workload, errors = convert_serving(serving)
    assert errors == []
    assert workload is not None
    pods = [obj for obj in render_group(workload, 0) if obj["kind"] == "Pod"]
    assert [p["metadata"]["labels"][LWS_WORKER_INDEX] for p in pods] == ["0", "1"]
    for pod in pods:
        labels = pod["metadata"]["labels"]
        assert labels[LWS_NAME] == "lws"
        assert labels[LWS_GROUP_INDEX] == "0"
        assert labels[LWS_GROUP_KEY] == hashlib.sha1(b"lws-0").hexdigest()
