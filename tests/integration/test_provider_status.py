"""ExternalModelProvider conditions (spec §1.3) written by the status service, with the watcher
feeding it, on the real stack: a TLS server on loopback stands in for the provider. Each reason is
reached by changing the cluster the way a user would (Secret missing, unlabelled, without the key,
then right; a provider whose address refuses connections, one whose certificate the router would
not accept; the provider going away) and is left again when the cause is fixed."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from ferry_local.readiness import free_port

from tests.conftest import KubeEnv
from tests.support.cluster import Cluster, eventually
from tests.support.loopback import self_signed, serve
from tests.support.services import ServiceSet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
JSON = dict[str, Any]
CREDENTIAL_LABEL = "networking.serving.volcano.sh/external-model-provider-credential"
KIND = "ExternalModelProvider"


class Silent(BaseHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def services(kube: KubeEnv, nats_url: str, namespace: str, tmp_path: Path) -> Iterator[ServiceSet]:
    env = {
        **kube.env,
        "FERRY_NATS_URL": nats_url,
        "FERRY_WATCH_NAMESPACE": namespace,
        "FERRY_STATUS_PROVIDER_PROBE_INTERVAL": "1",
    }
    started = ServiceSet(tmp_path / "logs", env)
    started.start(["watcher", "status"])
    try:
        yield started
    finally:
        started.stop()


def provider(name: str, base_url: str, *, secret: str | None = None, insecure: bool = True) -> JSON:
    spec: JSON = {"providerType": "OpenAI", "baseURL": base_url, "insecureSkipVerify": insecure}
    if secret is not None:
        spec["auth"] = {"secretRef": {"name": secret, "key": "apiKey"}}
    return {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def secret(name: str, data: dict[str, str], *, labelled: bool = True) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {CREDENTIAL_LABEL: "true"} if labelled else {}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def reasons(cluster: Cluster, name: str) -> tuple[str, str] | None:
    """(CredentialsResolved reason, Ready reason) once both are written."""
    credentials = cluster.condition(KIND, name, "CredentialsResolved")
    ready = cluster.condition(KIND, name, "Ready")
    if credentials is None or ready is None:
        return None
    return credentials["reason"], ready["reason"]


def wait_reasons(cluster: Cluster, name: str, want: tuple[str, str]) -> None:
    eventually(lambda: reasons(cluster, name) == want, 60, f"{name} conditions {want}")


def test_provider_conditions_follow_credentials_and_reachability(
    kube: KubeEnv, namespace: str, services: ServiceSet, tmp_path: Path
) -> None:
    cluster = Cluster(kube, namespace)
    tls = self_signed(tmp_path)
    with serve(Silent, tls) as (_, url):
        cluster.apply(provider("ext", f"{url}/v1", secret="cred"))
        wait_reasons(cluster, "ext", ("CredentialNotFound", "CredentialNotFound"))
        assert not cluster.condition_is(KIND, "ext", "Ready")

        cluster.apply(secret("cred", {"apiKey": "sk-1"}, labelled=False))  # not a credential yet
        wait_reasons(cluster, "ext", ("CredentialNotFound", "CredentialNotFound"))
        message = cluster.condition(KIND, "ext", "CredentialsResolved")["message"]  # type: ignore[index]
        assert CREDENTIAL_LABEL in message  # says what is missing

        cluster.apply(secret("cred", {"token": "sk-1"}))
        wait_reasons(cluster, "ext", ("CredentialKeyNotFound", "CredentialKeyNotFound"))
        cluster.apply(secret("cred", {"apiKey": "  "}))
        wait_reasons(cluster, "ext", ("CredentialInvalid", "CredentialInvalid"))
        cluster.apply(secret("cred", {"apiKey": "sk-1"}))
        wait_reasons(cluster, "ext", ("CredentialResolved", "Ready"))
        obj = cluster.get(KIND, "ext")
        assert obj is not None
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert cluster.condition_is(KIND, "ext", "Ready")

        # nothing listens there; and a certificate the router would refuse without insecureSkipVerify
        cluster.apply(provider("closed", f"https://127.0.0.1:{free_port()}"))
        cluster.apply(provider("strict", url, insecure=False))
        wait_reasons(cluster, "closed", ("CredentialNotRequired", "ProviderUnreachable"))
        wait_reasons(cluster, "strict", ("CredentialNotRequired", "ProviderUnreachable"))
        strict = cluster.condition(KIND, "strict", "Ready")
        assert strict is not None
        assert "CERTIFICATE_VERIFY_FAILED" in strict["message"]
        cluster.patch(KIND, "strict", {"spec": {"insecureSkipVerify": True}})
        wait_reasons(cluster, "strict", ("CredentialNotRequired", "Ready"))
        ready_since = cluster.condition(KIND, "ext", "Ready")["lastTransitionTime"]  # type: ignore[index]

    # the provider went away: Ready turns False within a probe interval, and back when it returns
    wait_reasons(cluster, "ext", ("CredentialResolved", "ProviderUnreachable"))
    assert cluster.condition(KIND, "ext", "Ready")["lastTransitionTime"] >= ready_since  # type: ignore[index]
