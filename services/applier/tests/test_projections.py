"""The view's projections keep every field a reconcile reads: same answers from the kept object."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ferry_applier.projections import PROJECTIONS, model_serving, pod
from ferry_applier.replicas import autoscaler_fields, owns_replicas
from ferry_applier.service import VIEWED
from ferry_applier.workload.engine import images
from ferry_applier.workload.recovery import failed_since
from ferry_applier.workload.state import pod_state
from ferry_schemas.autoscaling import REPLICAS_MANAGER
from ferry_schemas.bus import Resource

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "ms-0-leader-0-0",
        "namespace": "ns",
        "uid": "u1",
        "resourceVersion": "7",
        "labels": {"modelserving.volcano.sh/name": "ms", "modelserving.volcano.sh/revision": "r1"},
        "annotations": {
            "applier.ferry/group-incarnation": "g",
            "controller.kubernetes.io/pod-deletion-cost": "3",
        },
        "ownerReferences": [{"uid": "ms-uid", "kind": "ModelServing", "name": "ms", "controller": True}],
    },
    "spec": {
        "initContainers": [{"name": "download", "image": "kthena/downloader:latest", "args": ["x"] * 50}],
        "containers": [
            {"name": "engine", "image": "vllm/vllm-openai:latest", "env": [{"name": "A", "value": "b"}]}
        ],
        "volumes": [{"name": "v", "emptyDir": {}}],
    },
    "status": {
        "phase": "Running",
        "podIP": "127.0.1.2",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-30T09:00:00Z"}],
        "containerStatuses": [{"name": "engine", "restartCount": 2, "image": "x", "state": {"running": {}}}],
    },
}

SERVING: dict[str, Any] = {
    "apiVersion": "workload.serving.volcano.sh/v1alpha1",
    "kind": "ModelServing",
    "metadata": {
        "name": "ms",
        "namespace": "ns",
        "managedFields": [
            {
                "manager": "ferry",
                "operation": "Apply",
                "fieldsV1": {"f:spec": {"f:schedulerName": {}, "f:template": {}}},
            },
            {
                "manager": REPLICAS_MANAGER,
                "operation": "Apply",
                "fieldsV1": {
                    "f:spec": {
                        "f:replicas": {},
                        "f:template": {
                            "f:roles": {'k:{"name":"decode"}': {".": {}, "f:replicas": {}, "f:name": {}}}
                        },
                    }
                },
            },
            {
                "manager": "ferry-status",
                "operation": "Apply",
                "subresource": "status",
                "fieldsV1": {"f:status": {}},
            },
        ],
    },
    "spec": {"replicas": 2, "template": {"roles": [{"name": "decode", "replicas": 3}]}},
    "status": {"replicas": 2, "conditions": [{"type": "Available"}]},
}


def test_a_projected_pod_gives_the_same_state_images_and_failure_time() -> None:
    kept = pod(json.loads(json.dumps(POD)))
    assert pod_state(kept) == pod_state(POD)
    assert pod_state(kept).failed  # restarted, not ready: the restart count was kept
    assert (
        images(kept)
        == images(POD)
        == {
            "download": "kthena/downloader:latest",
            "engine": "vllm/vllm-openai:latest",
        }
    )
    fallback = datetime(2026, 1, 1, tzinfo=UTC)
    assert failed_since(kept, fallback) == failed_since(POD, fallback) != fallback
    assert kept["metadata"] == POD["metadata"]
    assert "volumes" not in kept["spec"]
    assert "podIP" not in kept["status"]


def test_a_projected_serving_keeps_who_owns_replicas_and_its_spec() -> None:
    kept = model_serving(json.loads(json.dumps(SERVING)))
    assert autoscaler_fields(kept) == autoscaler_fields(SERVING) == (True, {"decode"})
    for manager in ("ferry", REPLICAS_MANAGER):
        assert owns_replicas(kept, manager) == owns_replicas(SERVING, manager)
    assert kept["spec"] == SERVING["spec"]
    assert "status" not in kept
    assert [e["manager"] for e in kept["metadata"]["managedFields"]] == [REPLICAS_MANAGER]


def test_every_viewed_kind_but_controller_revisions_is_projected() -> None:
    assert set(PROJECTIONS) == {str(r) for r in VIEWED} - {str(Resource.CONTROLLER_REVISIONS)}
