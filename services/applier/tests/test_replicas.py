"""Which replica fields the applier leaves to others (autoscaler, `kubectl scale`, HPA), per managedFields."""

from __future__ import annotations

from typing import Any

from ferry_applier.replicas import (
    APPLIED_REPLICAS,
    autoscaler_fields,
    owns_replicas,
    replicas_only,
    serving_body,
    without_replicas,
)


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


def stored(replicas: int, managed: list[dict[str, Any]], applied: int | None) -> dict[str, Any]:
    """A stored ModelServing at ``replicas``, with the owner's value last applied (if recorded)."""
    obj = serving(managed)
    obj["spec"]["replicas"] = replicas
    if applied is not None:
        obj["metadata"]["annotations"] = {APPLIED_REPLICAS: str(applied)}
    return obj


APPLIER = entry("ferry", {"f:replicas": {}, "f:template": {}})
APPLIER["operation"] = "Apply"
KUBECTL_SCALE = entry("kubectl", {"f:replicas": {}}, "scale")
APPLIER_WITHOUT_REPLICAS = {**APPLIER, "fieldsV1": {"f:spec": {"f:template": {}}}}


def test_a_new_serving_is_created_with_the_owners_replicas_and_records_them() -> None:
    body = serving_body(serving([]), None, "ferry")
    assert body["spec"]["replicas"] == 2
    assert body["metadata"]["annotations"] == {APPLIED_REPLICAS: "2"}


def test_the_applier_reapplies_the_value_it_still_owns() -> None:
    assert serving_body(serving([]), stored(2, [APPLIER], 2), "ferry")["spec"]["replicas"] == 2


def test_a_value_kubectl_scale_wrote_is_left_alone_while_the_owner_keeps_its_value() -> None:
    previous = stored(5, [APPLIER_WITHOUT_REPLICAS, KUBECTL_SCALE], 2)
    body = serving_body(serving([]), previous, "ferry")
    assert "replicas" not in body["spec"]
    assert body["metadata"]["annotations"] == {APPLIED_REPLICAS: "2"}
    assert body["spec"]["template"] == serving([])["spec"]["template"]  # the rest is still applied


def test_a_change_of_the_owners_replicas_is_applied_over_kubectl_scale() -> None:
    previous = stored(5, [APPLIER_WITHOUT_REPLICAS, KUBECTL_SCALE], 1)
    body = serving_body(serving([]), previous, "ferry")
    assert body["spec"]["replicas"] == 2
    assert body["metadata"]["annotations"] == {APPLIED_REPLICAS: "2"}


def test_without_a_record_another_managers_value_is_kept() -> None:
    assert "replicas" not in serving_body(serving([]), stored(5, [KUBECTL_SCALE], None), "ferry")["spec"]


def test_the_autoscalers_replicas_are_never_applied_even_when_the_owners_value_changes() -> None:
    scaled = entry("ferry-autoscaler", {"f:replicas": {}}, "scale")
    roles = entry(
        "ferry-autoscaler", {"f:template": {"f:roles": {'k:{"name":"decode"}': {"f:replicas": {}}}}}
    )
    body = serving_body(serving([]), stored(7, [APPLIER_WITHOUT_REPLICAS, scaled, roles], 1), "ferry")
    assert "replicas" not in body["spec"]
    assert body["spec"]["template"]["roles"] == [{"name": "prefill", "replicas": 1}, {"name": "decode"}]
