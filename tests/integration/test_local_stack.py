"""The fixtures give a real API server with a garbage collector and a real JetStream."""

from __future__ import annotations

import json
import time

import nats
import pytest
from ferry_schemas.bus import MSG_ID_HEADER, OBJECTS_STREAM, object_subject
from ferry_schemas.runtime.jetstream import declare_streams

from tests.conftest import KubeEnv

pytestmark = pytest.mark.integration


def test_api_server_answers_and_serves_ferry_crds(kube: KubeEnv) -> None:
    version = json.loads(kube.kubectl_run("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    groups = kube.kubectl_run("api-resources", "-o", "name").stdout.split()
    assert "namespaces" in groups


def test_garbage_collector_cascades_owner_deletion(kube: KubeEnv, namespace: str) -> None:
    kube.kubectl_run("-n", namespace, "create", "configmap", "owner")
    get_uid = ("-n", namespace, "get", "configmap", "owner", "-o", "jsonpath={.metadata.uid}")
    uid = kube.kubectl_run(*get_uid).stdout
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid, "controller": True}
            ],
        },
    }
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(child))
    kube.kubectl_run("-n", namespace, "delete", "configmap", "owner")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if kube.kubectl_run("-n", namespace, "get", "configmap", "child", check=False).returncode != 0:
            return
        time.sleep(0.3)
    pytest.fail("the garbage collector did not delete the owned ConfigMap within 30s")


async def test_jetstream_keeps_last_message_per_subject_and_deduplicates(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await declare_streams(js)
        subject = object_subject("modelboosters", "smoke", "a.b")
        first = await js.publish(subject, b"1", headers={MSG_ID_HEADER: "smoke/1"})
        again = await js.publish(subject, b"1", headers={MSG_ID_HEADER: "smoke/1"})
        await js.publish(subject, b"2", headers={MSG_ID_HEADER: "smoke/2"})
        assert again.duplicate
        assert again.seq == first.seq
        last = await js.get_last_msg(OBJECTS_STREAM, subject)
        assert last.data == b"2"
        info = await js.stream_info(OBJECTS_STREAM, subjects_filter=subject)
        assert info.state.subjects == {subject: 1}
    finally:
        await nc.close()
