"""What the status service keeps of desired sets and apply results (the pipeline view's records)."""

import json
import tracemalloc

from ferry_schemas.bus import ApplyResult, ChildResult, ConversionError, DesiredSet, OwnerKey
from ferry_status.booster_status import expected_servings
from ferry_status.bus_state import DesiredRecord, ResultRecord
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


def test_a_desired_record_keeps_what_status_reads_of_the_set() -> None:
    whole = DesiredSet(
        owner=OWNER,
        children=[child("ModelServing", "b-0"), child("ModelServer", "b"), child("ModelServing", "b-1")],
        managed_kinds=["ModelServing", "ModelServer"],
        owner_selector={"owner": "b"},
    )
    record = DesiredRecord.from_wire(wire(whole))
    assert (record.uid, record.generation, record.errors) == ("u1", 3, ())
    assert record.servings == ("b-0", "b-1")
    assert expected_servings(booster(), record) == {"b-0", "b-1"}
    assert record.produced_at == whole.produced_at.timestamp()  # the first-write hold counts from it
    assert pipeline_outcome(booster(), record, None).failed is False


def test_conversion_errors_and_failed_results_survive_as_records() -> None:
    failed = DesiredSet(
        owner=OWNER, errors=[ConversionError(field="spec.x", message="bad", reason="Invalid")]
    )
    result = ApplyResult(
        owner=OWNER, ok=False, reason="ApplyFailed", message="refused",
        children=[ChildResult(api_version="v1", kind="Service", name="s", action="failed", message="no")],
    )  # fmt: skip
    desired, applied = DesiredRecord.from_wire(wire(failed)), ResultRecord.from_wire(wire(result))
    assert pipeline_outcome(booster(), desired, applied).message == "spec.x: bad"
    assert pipeline_outcome(booster(), desired, applied).reason == "Invalid"
    assert pipeline_outcome(booster(), None, applied).message == "refused"
    assert pipeline_outcome(booster(), None, applied).reason == "ApplyFailed"
    assert applied.finished_at == result.finished_at.timestamp()
    assert applied.shown == ()  # a failed child is not waited for


def test_a_result_record_keeps_only_the_children_a_first_status_waits_to_see() -> None:
    children = [
        ChildResult(api_version="v1", kind="Pod", name="p-0", action="created"),
        ChildResult(api_version="v1", kind="Service", name="s", action="applied"),
        ChildResult(api_version="v1", kind="PodGroup", name="g", action="unchanged"),
        ChildResult(api_version="v1", kind="Pod", name="p-9", action="pruned"),
    ]
    record = ResultRecord.of(ApplyResult(owner=OWNER, ok=True, children=children))
    assert record.shown == (("Pod", "p-0"), ("Service", "s"))
    assert (record.uid, record.generation, record.ok) == ("u1", 3, True)


def test_records_are_a_small_fraction_of_the_models() -> None:
    """The point of the records: a booster's pair costs a few hundred bytes, not ~12 KB."""
    servings = [child("ModelServing", f"b-{i}") for i in range(2)]
    desired = wire(DesiredSet(owner=OWNER, children=[*servings, child("ModelServer", "b")]))
    children = [ChildResult(api_version="v1", kind="Pod", name=f"p-{i}", action="created") for i in range(4)]
    result = wire(ApplyResult(owner=OWNER, ok=True, children=children))

    def retained(build: object) -> int:
        tracemalloc.start()
        try:
            kept = [build() for _ in range(200)]  # type: ignore[operator]
            size = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(kept) == 200
        return size // 200

    as_records = retained(lambda: (DesiredRecord.from_wire(desired), ResultRecord.from_wire(result)))
    as_models = retained(lambda: (DesiredSet.model_validate(desired), ApplyResult.model_validate(result)))
    assert as_records < 1024 < as_models / 4, (as_records, as_models)
