"""What the status service keeps of desired sets and apply results (the pipeline view's records)."""

import json

from ferry_schemas.bus import ApplyResult, ChildResult, ConversionError, DesiredSet, OwnerKey
from ferry_status.booster_status import expected_servings
from ferry_status.bus_state import slim_desired, slim_result
from ferry_status.outcome import pipeline_outcome

OWNER = OwnerKey(
    api_version="workload.serving.volcano.sh/v1alpha1", kind="ModelBooster", resource="modelboosters",
    namespace="ns", name="b", uid="u1", generation=3,
)  # fmt: skip


def child(kind: str, name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "spec": {"big": ["x"] * 100}}


def booster() -> dict[str, object]:
    return {"metadata": {"name": "b", "namespace": "ns", "uid": "u1", "generation": 3}, "spec": {}}


def wire(model: DesiredSet | ApplyResult) -> dict[str, object]:
    data: dict[str, object] = json.loads(model.to_bytes())
    return data


def test_a_slim_desired_set_answers_what_status_asks_of_the_whole_one() -> None:
    whole = DesiredSet(
        owner=OWNER,
        children=[child("ModelServing", "b-0"), child("ModelServer", "b"), child("ModelServing", "b-1")],
        managed_kinds=["ModelServing", "ModelServer"],
        owner_selector={"owner": "b"},
    )
    slim = slim_desired(wire(whole))
    assert slim.owner == whole.owner
    assert expected_servings(booster(), slim) == expected_servings(booster(), whole) == {"b-0", "b-1"}
    assert all("spec" not in c for c in slim.children)
    assert pipeline_outcome(booster(), slim, None) == pipeline_outcome(booster(), whole, None)
    assert slim.produced_at == whole.produced_at  # the first-write hold counts from it


def test_conversion_errors_and_results_survive_the_slimming() -> None:
    failed = DesiredSet(
        owner=OWNER, errors=[ConversionError(field="spec.x", message="bad", reason="Invalid")]
    )
    result = ApplyResult(
        owner=OWNER, ok=False, reason="ApplyFailed", message="refused",
        children=[ChildResult(api_version="v1", kind="Service", name="s", action="failed", message="no")],
    )  # fmt: skip
    slim_failed, slim_applied = slim_desired(wire(failed)), slim_result(wire(result))
    assert slim_applied == result
    assert pipeline_outcome(booster(), slim_failed, slim_applied) == pipeline_outcome(
        booster(), failed, result
    )
    assert pipeline_outcome(booster(), None, slim_applied) == pipeline_outcome(booster(), None, result)
    assert pipeline_outcome(booster(), None, slim_applied).message == "refused"
