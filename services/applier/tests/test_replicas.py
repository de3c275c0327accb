"""Which replica fields the applier leaves to the autoscaler (read from ``managedFields``)."""

from __future__ import annotations

from typing import Any

from ferry_applier.replicas import autoscaler_fields, owns_replicas, replicas_only, without_replicas


def serving(managed: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelServing",
        "metadata": {"name": "ms", "namespace": "ns", "managedFields": managed},
        "spec": {
            "replicas": 2,
            "template": {"roles": [{"name": "prefill", "replicas": 1}, {"name": "decode", "replicas": 3}]},
        },
    }


def entry(manager: str, spec: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"manager": manager, "operation": "Update", "fieldsV1": {"f:spec": spec}}
    if subresource:
        found["subresource"] = subresource
    return found


def test_scale_subresource_write_owns_the_total() -> None:
    obj = serving(
        [entry("ferry", {"f:template": {}}), entry("ferry-autoscaler", {"f:replicas": {}}, "scale")]
    )
    assert autoscaler_fields(obj) == (True, set())
    assert not owns_replicas(obj, "ferry")


def test_role_patch_owns_that_role_only() -> None:
    roles = {'k:{"name":"decode"}': {"f:replicas": {}}, 'k:{"name":"prefill"}': {"f:name": {}}}
    obj = serving([entry("ferry-autoscaler", {"f:template": {"f:roles": roles}})])
    assert autoscaler_fields(obj) == (False, {"decode"})
    stripped = without_replicas(obj, total=False, roles={"decode"})
    assert stripped["spec"]["replicas"] == 2
    assert stripped["spec"]["template"]["roles"] == [{"name": "prefill", "replicas": 1}, {"name": "decode"}]


def test_nothing_owned_by_the_autoscaler() -> None:
    assert autoscaler_fields(serving([entry("ferry", {"f:replicas": {}})])) == (False, set())
    assert autoscaler_fields(None) == (False, set())


def test_handover_body_names_only_the_replicas() -> None:
    body = replicas_only(serving([]), 4)
    assert body == {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelServing",
        "metadata": {"name": "ms", "namespace": "ns"},
        "spec": {"replicas": 4},
    }
