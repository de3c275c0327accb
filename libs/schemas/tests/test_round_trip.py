"""Every reference manifest of a Ferry kind loads into its model and dumps back unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from ferry_schemas.models import KIND_BY_NAME, ModelBooster, load_object
from ferry_schemas.models.reference import ReferenceManifest, all_inputs, seed_examples

MANIFESTS = all_inputs()


def _without_nulls(value: Any) -> Any:
    """``exclude_none`` drops explicit ``null``s, which mean "unset" on the wire anyway."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def test_reference_set_is_complete() -> None:
    kinds = {m.kind for m in MANIFESTS}
    assert {"ModelBooster", "ModelServing", "ModelServer", "ModelRoute", "AutoscalingPolicy"} <= kinds
    assert len(MANIFESTS) >= 60
    assert len(seed_examples()) == 3


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.source for m in MANIFESTS])
def test_load_dump_round_trip(manifest: ReferenceManifest) -> None:
    obj = load_object(manifest.obj)
    assert type(obj) is KIND_BY_NAME[manifest.kind]
    assert obj.to_wire() == _without_nulls(manifest.obj)


def test_typed_fields_are_parsed_not_only_kept() -> None:
    booster = next(m for m in MANIFESTS if m.source.startswith("v0.1.0/") and "multi-lora" in m.source)
    model = ModelBooster.model_validate(booster.obj)
    backends = model.backend_list()
    assert [b.name for b in backends] == ["backend1", "backend2"]
    assert backends[0].route_weight == 40
    assert backends[0].lora_adapters is not None
    assert backends[0].lora_adapters[0].artifact_url.startswith("s3://")
    assert model.spec.autoscaling_policy is not None
    assert model.spec.autoscaling_policy.metrics is not None
    assert model.spec.autoscaling_policy.metrics[0].metric_name == "kthena:num_requests_waiting"
    assert model.model_extra == {}


def test_unknown_fields_survive() -> None:
    data = {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelBooster",
        "metadata": {"name": "m", "managedFields": [{"manager": "kubectl"}]},
        "spec": {
            "futureField": {"a": 1},
            "backend": {
                "name": "b",
                "type": "vLLM",
                "modelURI": "hf://x",
                "replicas": 1,
                "workers": [{"type": "server", "extra": True}],
            },
        },
    }
    assert ModelBooster.model_validate(data).to_wire() == data


def test_identity_is_filled_for_objects_built_in_code() -> None:
    booster = ModelBooster.model_validate(
        {
            "spec": {
                "backend": {"name": "b", "type": "vLLM", "modelURI": "hf://x", "replicas": 1, "workers": [{}]}
            }
        }
    )
    wire = booster.to_wire()
    assert wire["apiVersion"] == "workload.serving.volcano.sh/v1alpha1"
    assert wire["kind"] == "ModelBooster"


def test_snake_case_names_are_accepted() -> None:
    from ferry_schemas.models import ModelBackend, ModelWorker

    backend = ModelBackend(name="b", type="vLLM", model_uri="hf://x", replicas=1, workers=[ModelWorker()])
    assert backend.to_wire()["modelURI"] == "hf://x"
