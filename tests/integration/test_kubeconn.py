"""The lean API connection's whole-body requests against the real API server: TLS with a client
certificate and with a bearer token (read again from its file when rotated), and the server's
``Status`` bodies of 404, 409 and 422 carried by :class:`ApiError`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ferry_local.identities import identities_for
from ferry_schemas.runtime import kubeconn
from ferry_schemas.runtime.kubeconn import ApiError, object_path

from tests.conftest import KubeEnv

pytestmark = pytest.mark.integration


def pod(namespace: str, name: str) -> kubeconn.JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def status_of(exc: ApiError) -> tuple[int, str]:
    body = yaml.safe_load(exc.body)
    assert body["kind"] == "Status"
    return body["code"], body["reason"]


async def test_a_client_certificate_and_the_servers_status_bodies(kube: KubeEnv, namespace: str) -> None:
    assert yaml.safe_load(kube.kubeconfig.read_text())["users"][0]["user"].get("client-certificate")
    api = await kubeconn.connect(str(kube.kubeconfig))
    try:
        path = object_path("", "v1", "configmaps", namespace, "cm")
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "v"}}
        stored = await api.apply(path, body, "test", accept=kubeconn.METADATA_ONLY)
        assert stored["kind"] == "PartialObjectMetadata"
        assert (await api.send("GET", path))["data"] == {"k": "v"}
        await api.send("DELETE", path)
        with pytest.raises(ApiError) as missing:
            await api.send("GET", path)
        assert missing.value.status == 404
        assert status_of(missing.value) == (404, "NotFound")
        listed = await api.send("GET", object_path("", "v1", "configmaps", namespace), query=[("limit", "1")])
        assert listed["kind"] == "ConfigMapList"  # a query goes through
    finally:
        await api.close()


async def test_a_rotated_token_file_and_conflicts(kube: KubeEnv, namespace: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    doc = yaml.safe_load(identities_for(kube.kubeconfig)["applier"].read_text())
    user = doc["users"][0]["user"]
    token_file = tmp_path / "token"
    token_file.write_text("not-a-token\n")
    doc["users"][0]["user"] = {"tokenFile": str(token_file)}
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(kubeconn, "TOKEN_REREAD_SECONDS", 0.0)
    api = await kubeconn.connect(str(config))
    try:
        pods = object_path("", "v1", "pods", namespace)
        with pytest.raises(ApiError) as refused:
            await api.send("POST", pods, pod(namespace, "p"))
        assert refused.value.status == 401
        token_file.write_text(user["token"] + "\n")  # rotated: the next request carries the new token
        created = await api.send("POST", pods, pod(namespace, "p"), accept=kubeconn.METADATA_ONLY)
        assert created["metadata"]["name"] == "p"
        with pytest.raises(ApiError) as exists:
            await api.send("POST", pods, pod(namespace, "p"))
        assert status_of(exists.value) == (409, "AlreadyExists")
        with pytest.raises(ApiError) as invalid:
            await api.send("POST", pods, pod(namespace, "Not_A_Name"))
        assert status_of(invalid.value) == (422, "Invalid")
        assert "Not_A_Name" in str(invalid.value)
    finally:
        await api.close()
