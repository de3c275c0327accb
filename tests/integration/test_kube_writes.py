"""The shape of the applier's writes against the real API server: answers carry only the stored
metadata unless the whole object is asked for, ownership stays (for a POSTed child: becomes, at its
first later apply) one ``ferry`` Apply entry, and with the server's strict second decode skipped a
POST still prunes a field the schema does not know (a server-side apply refuses one in every mode)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from ferry_applier.kube import KubeClient, load_api_client
from ferry_local.identities import identities_for
from ferry_schemas import labels as L

from tests.conftest import KubeEnv

pytestmark = pytest.mark.integration
JSON = dict[str, Any]


@pytest.fixture
async def client(kube: KubeEnv) -> AsyncIterator[KubeClient]:
    api = await load_api_client(str(identities_for(kube.kubeconfig)["applier"]))
    try:
        yield KubeClient(api, timeout=20.0)
    finally:
        await api.close()


def route(namespace: str, name: str, weight: int) -> JSON:
    return {
        "apiVersion": L.NETWORKING_API_VERSION,
        "kind": "ModelRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "modelName": name,
            "rules": [{"targetModels": [{"modelServerName": "srv", "weight": weight}]}],
        },
    }


async def test_an_apply_answers_with_the_stored_metadata_unless_asked_for_the_whole_object(
    client: KubeClient, namespace: str
) -> None:
    stored = await client.apply(route(namespace, "r", 100))
    assert stored["kind"] == "PartialObjectMetadata"
    assert "spec" not in stored
    owners = [(e["manager"], e["operation"]) for e in stored["metadata"]["managedFields"]]
    assert owners == [("ferry", "Apply")]

    read = await client.get("ModelRoute", namespace, "r")
    assert read is not None
    assert read["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert read["metadata"]["uid"] == stored["metadata"]["uid"]

    whole = await client.apply(route(namespace, "r", 50), whole=True)
    assert whole["kind"] == "ModelRoute"
    assert whole["spec"]["rules"][0]["targetModels"][0]["weight"] == 50


async def test_a_created_pod_answers_with_its_metadata_and_unknown_fields_are_pruned(
    client: KubeClient, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox", "notInTheSchema": 1}]},
    }
    stored = await client.create(pod)
    assert stored is not None
    assert stored["kind"] == "PartialObjectMetadata"
    assert "spec" not in stored
    read = await client.get("Pod", namespace, "p")
    assert read is not None
    assert read["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert "notInTheSchema" not in read["spec"]["containers"][0]
    assert await client.create(pod) is None  # already there


async def test_a_posted_child_is_owned_by_apply_from_its_first_later_apply(
    client: KubeClient, namespace: str
) -> None:
    """A child created by POST (its fields ``ferry``'s Update entry) is folded into one Apply entry
    by its first later apply, which then prunes what it no longer sends, as if applied from the start."""
    body = route(namespace, "posted", 100)
    body["spec"]["loraAdapters"] = ["lora-a"]
    created = await client.create_or_apply(body)
    owners = [(e["manager"], e["operation"]) for e in created["metadata"]["managedFields"]]
    assert owners == [("ferry", "Update")]

    stored = await client.apply(route(namespace, "posted", 100))  # the adapter is not desired any more
    owners = [(e["manager"], e["operation"]) for e in stored["metadata"]["managedFields"]]
    assert owners == [("ferry", "Apply")]
    read = await client.get("ModelRoute", namespace, "posted")
    assert read is not None
    assert "loraAdapters" not in read["spec"]  # pruned: without the fold the Update entry would keep it

    again = await client.create_or_apply(route(namespace, "posted", 50))  # it exists: applied
    owners = [(e["manager"], e["operation"]) for e in again["metadata"]["managedFields"]]
    assert owners == [("ferry", "Apply")]
    read = await client.get("ModelRoute", namespace, "posted")
    assert read is not None
    assert read["spec"]["rules"][0]["targetModels"][0]["weight"] == 50


async def test_a_posted_child_edited_by_hand_keeps_the_other_managers_fields(
    client: KubeClient, namespace: str, kube: KubeEnv
) -> None:
    """Folding touches only ``ferry``'s entries: a field somebody else set stays theirs and stays."""
    await client.create_or_apply(route(namespace, "shared", 100))
    kube.kubectl_run(
        "annotate", "modelroute", "shared", "-n", namespace, "team=inference", "--field-manager", "someone"
    )
    stored = await client.apply(route(namespace, "shared", 70))
    managers = {(e["manager"], e["operation"]) for e in stored["metadata"]["managedFields"]}
    assert managers == {("ferry", "Apply"), ("someone", "Update")}
    read = await client.get("ModelRoute", namespace, "shared")
    assert read is not None
    assert read["metadata"]["annotations"]["team"] == "inference"
    assert read["spec"]["rules"][0]["targetModels"][0]["weight"] == 70
