"""The shape of the applier's writes against the real API server: answers carry only the stored
metadata unless the whole object is asked for, ownership stays one ``ferry`` Apply entry, and with
the server's strict second decode skipped a POST still prunes a field the schema does not know (a
server-side apply refuses one in every mode)."""

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
