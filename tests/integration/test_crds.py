"""Ferry's CRDs against the real API server: examples accepted, invalid manifests refused, GC cascade.

(a) every Ferry-kind object in Kthena's HEAD examples, the seed documents and the converter inputs is
accepted by ``kubectl apply`` and read back with nothing pruned; (b) one invalid manifest per rule is
refused with a message naming the field and the problem, and nothing is stored; (c) deleting a
ModelBooster deletes what it owns (kube-controller-manager's garbage collector).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ferry_schemas.models.reference import ReferenceManifest, converter_inputs, head_examples, seed_examples

from tests.conftest import KubeEnv, fresh_namespace
from tests.integration.invalid_manifests import CASES, PLURALS, InvalidCase

pytestmark = pytest.mark.integration

ACCEPTED = head_examples() + seed_examples() + converter_inputs()
CASCADE_TIMEOUT_S = 60.0


def _as_applied(manifest: ReferenceManifest, namespace: str) -> dict[str, Any]:
    """The manifest as a user would apply it here: our namespace, a name Kubernetes accepts."""
    obj: dict[str, Any] = json.loads(json.dumps(manifest.obj))
    metadata = obj.setdefault("metadata", {})
    metadata["namespace"] = namespace
    metadata["name"] = metadata["name"].lower()  # the seed's `PD-sample` is not a valid object name
    metadata.pop("uid", None)  # converter inputs carry a fake uid
    return obj


def _not_kept(given: Any, stored: Any, path: str = "") -> list[str]:
    """Paths of ``given`` that the API server did not keep as given (pruned or altered)."""
    if isinstance(given, dict):
        if not isinstance(stored, dict):
            return [path or "<root>"]
        return [p for key, value in given.items() for p in _not_kept(value, stored.get(key), f"{path}.{key}")]
    if isinstance(given, list):
        if not isinstance(stored, list) or len(given) != len(stored):
            return [path]
        return [
            p
            for i, (g, s) in enumerate(zip(given, stored, strict=True))
            for p in _not_kept(g, s, f"{path}[{i}]")
        ]
    if given is None:
        return []
    return [] if given == stored else [f"{path}: {given!r} stored as {stored!r}"]


@pytest.mark.parametrize("manifest", ACCEPTED, ids=[m.source for m in ACCEPTED])
def test_reference_manifest_is_accepted_and_read_back(
    kube: KubeEnv, namespace: str, manifest: ReferenceManifest
):
    obj = _as_applied(manifest, namespace)
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(obj))
    resource = PLURALS[manifest.kind]
    stored = json.loads(
        kube.kubectl_run("get", resource, obj["metadata"]["name"], "-n", namespace, "-o", "json").stdout
    )
    assert stored["kind"] == manifest.kind
    assert not _not_kept(obj["spec"], stored["spec"]), "the API server pruned or altered fields"


@pytest.fixture(scope="module")
def invalid_namespace(kube: KubeEnv) -> Iterator[str]:
    """One namespace for the whole table: nothing is ever stored in it."""
    with fresh_namespace(kube, "t-invalid") as name:
        yield name


def test_the_table_covers_at_least_forty_rules() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.kind for case in CASES} == set(PLURALS)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_invalid_manifest_is_refused_and_nothing_stored(
    kube: KubeEnv, invalid_namespace: str, case: InvalidCase
):
    manifest = case.manifest()
    manifest["metadata"]["namespace"] = invalid_namespace
    done = kube.kubectl_run("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert done.returncode != 0, f"accepted: {done.stdout}"
    message = done.stderr
    for fragment in case.expect:
        assert fragment in message, f"{fragment!r} not in: {message}"
    got = kube.kubectl_run("get", PLURALS[case.kind], case.name, "-n", invalid_namespace, check=False)
    assert got.returncode != 0
    assert "NotFound" in got.stderr


def _apply(kube: KubeEnv, obj: dict[str, Any]) -> dict[str, Any]:
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(obj))
    kind = PLURALS.get(obj["kind"], obj["kind"].lower())
    meta = obj["metadata"]
    return dict(
        json.loads(kube.kubectl_run("get", kind, meta["name"], "-n", meta["namespace"], "-o", "json").stdout)
    )


def test_transition_rules_guard_immutable_fields(kube: KubeEnv, namespace: str) -> None:
    route = {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "r", "namespace": namespace},
        "spec": {"modelName": "a", "rules": [{"targetModels": [{"modelServerName": "s"}]}]},
    }
    _apply(kube, route)
    route["spec"]["modelName"] = "b"
    done = kube.kubectl_run("apply", "-f", "-", input=json.dumps(route), check=False)
    assert done.returncode != 0
    assert "spec.modelName" in done.stderr
    assert "modelName is immutable" in done.stderr

    entry = {"spec": {"containers": [{"name": "c", "image": "i"}]}}
    serving = {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelServing",
        "metadata": {"name": "s", "namespace": namespace},
        "spec": {"template": {
            "gangPolicy": {"minRoleReplicas": {"leader": 1}},
            "roles": [{"name": "leader", "entryTemplate": entry, "workerReplicas": 0}],
        }},
    }  # fmt: skip
    stored = _apply(kube, serving)
    assert stored["spec"]["replicas"] == 1, "CRD defaults are applied"
    assert stored["spec"]["template"]["roles"][0]["maxUnavailable"] == 1
    serving["spec"]["template"]["gangPolicy"] = {"minRoleReplicas": {"leader": 0}}
    done = kube.kubectl_run("apply", "-f", "-", input=json.dumps(serving), check=False)
    assert done.returncode != 0
    assert "minRoleReplicas is immutable" in done.stderr
    del serving["spec"]["template"]["gangPolicy"]
    done = kube.kubectl_run("apply", "-f", "-", input=json.dumps(serving), check=False)
    assert done.returncode != 0
    assert "gangPolicy is required once set" in done.stderr


def test_deleting_a_booster_deletes_what_it_owns(kube: KubeEnv, namespace: str) -> None:
    booster = _apply(kube, {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelBooster",
        "metadata": {"name": "owner", "namespace": namespace},
        "spec": {"backend": {"name": "b", "type": "vLLM", "modelURI": "hf://Qwen/Qwen2.5-0.5B-Instruct",
                             "replicas": 1, "workers": [{"type": "server", "image": "vllm/vllm-openai"}]}},
    })  # fmt: skip
    owner_ref = {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelBooster",
        "name": "owner",
        "uid": booster["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    _apply(kube, {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": "ModelServer",
        "metadata": {"name": "owner-b", "namespace": namespace, "ownerReferences": [owner_ref]},
        "spec": {"inferenceEngine": "vLLM", "workloadSelector": {"matchLabels": {"app": "owner"}},
                 "workloadPort": {"port": 8000}},
    })  # fmt: skip
    _apply(kube, {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "owner-config", "namespace": namespace, "ownerReferences": [owner_ref]},
        "data": {"k": "v"},
    })  # fmt: skip
    kube.kubectl_run("delete", PLURALS["ModelBooster"], "owner", "-n", namespace, "--wait=false")

    deadline = time.monotonic() + CASCADE_TIMEOUT_S
    remaining = ["modelserver", "configmap"]
    while remaining and time.monotonic() < deadline:
        remaining = [
            kind
            for kind, resource, name in (
                ("modelserver", PLURALS["ModelServer"], "owner-b"),
                ("configmap", "configmaps", "owner-config"),
            )
            if kube.kubectl_run("get", resource, name, "-n", namespace, check=False).returncode == 0
        ]
        time.sleep(0.5)
    assert not remaining, f"still present {CASCADE_TIMEOUT_S}s after the owner was deleted: {remaining}"
