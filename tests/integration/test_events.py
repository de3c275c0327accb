"""Kubernetes Events as the applier records them, written by the real recorder to the real API server
with the applier's own identity (RBAC included).

An apply result makes one Event per reason naming every child it touched, and Events of one object
and reason aggregate into one ``series`` whatever their notes say (client-go's ``tools/events``
key): a burst of boosters costs one ``Created`` Event per owner, not one per child.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from ferry_applier.explain import record_events
from ferry_applier.kube import load_api_client
from ferry_local.identities import identities_for
from ferry_schemas.bus import ApplyResult, ChildResult, OwnerKey
from ferry_schemas.runtime.events import EventRecorder

from tests.conftest import KubeEnv
from tests.support.cluster import eventually

pytestmark = [pytest.mark.integration]
JSON = dict[str, Any]


def configmap_owner(kube: KubeEnv, namespace: str, name: str) -> OwnerKey:
    kube.kubectl_run("create", "configmap", name, "-n", namespace)
    uid = kube.kubectl_run("get", "configmap", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}")
    return OwnerKey(
        api_version="v1", kind="ConfigMap", resource="configmaps", namespace=namespace, name=name,
        uid=uid.stdout, generation=1,
    )  # fmt: skip


def child(kind: str, name: str, action: str) -> ChildResult:
    return ChildResult.model_validate({"api_version": "v1", "kind": kind, "name": name, "action": action})


def events_of(kube: KubeEnv, namespace: str, name: str) -> list[JSON]:
    done = kube.kubectl_run("get", "events.events.k8s.io", "-n", namespace, "-o", "json")
    return [e for e in json.loads(done.stdout)["items"] if (e.get("regarding") or {}).get("name") == name]


async def test_one_event_per_reason_and_result_aggregated_per_object_and_reason(
    kube: KubeEnv, namespace: str
) -> None:
    owner = configmap_owner(kube, namespace, "owner-ev")
    api = await load_api_client(str(identities_for(kube.kubeconfig)["applier"]))
    recorder = EventRecorder(api, "ferry.serving.volcano.sh/applier", flush_interval=0.5)
    recorder.start()
    try:
        first = ApplyResult(
            owner=owner,
            ok=True,
            children=[
                child("ModelServing", "a", "created"),
                child("ModelServer", "a", "created"),
                child("ModelRoute", "a", "created"),
                child("ModelRoute", "old", "pruned"),
                child("Service", "a", "unchanged"),
            ],
        )
        record_events(recorder, first)
        # later results with other notes: the same (object, reason) series, not new Events
        for name in ("b", "c", "d"):
            record_events(
                recorder, ApplyResult(owner=owner, ok=True, children=[child("Pod", name, "created")])
            )

        def settled() -> list[JSON] | None:
            found = events_of(kube, namespace, "owner-ev")
            created = [e for e in found if e["reason"] == "Created"]
            count = [(e.get("series") or {}).get("count") for e in created]
            return found if count == [4] and len(found) == 2 else None

        found = await asyncio.to_thread(
            eventually, settled, 30, "one Created Event counted 4 times and one Pruned Event"
        )
    finally:
        await recorder.stop()
        await api.close()
    by_reason = {e["reason"]: e for e in found}
    created = by_reason["Created"]
    # the series keeps its first note: every child the first result created, in one Event
    assert created["note"] == "ModelServing a created; ModelServer a created; ModelRoute a created"
    assert created["regarding"]["uid"] == owner.uid
    assert created["reportingController"] == "ferry.serving.volcano.sh/applier"
    assert by_reason["Pruned"]["note"] == "ModelRoute old pruned (no longer desired)"
    assert "series" not in by_reason["Pruned"]
