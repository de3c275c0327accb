from datetime import UTC, datetime
from typing import Any

from ferry_schemas.bus import ApplyResult, ConversionError, DesiredSet, OwnerKey
from ferry_status.booster_status import compute_booster_status
from ferry_status.bus_state import DesiredRecord, ResultRecord

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"


def booster(generation: int = 1, pd: bool = False) -> dict[str, Any]:
    backend = {"name": "b", "type": "vLLMDisaggregated" if pd else "vLLM"}
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u1", "generation": generation},
        "spec": {"backend": backend},
    }


def owner(generation: int = 1) -> OwnerKey:
    return OwnerKey(
        api_version="workload.serving.volcano.sh/v1alpha1", kind="ModelBooster", resource="modelboosters",
        namespace="ns", name="m", uid="u1", generation=generation,
    )  # fmt: skip


def desired(
    generation: int = 1, errors: list[ConversionError] | None = None, produced: float | None = None
) -> DesiredRecord:
    child = {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelServing",
        "metadata": {"name": "m-b"},
    }
    whole = DesiredSet(owner=owner(generation), children=[] if errors else [child], errors=errors or [])
    if produced is not None:
        whole.produced_at = datetime.fromtimestamp(produced, UTC)
    return DesiredRecord.of(whole)


def apply_result(**fields: Any) -> ResultRecord:
    return ResultRecord.of(ApplyResult(**{"owner": owner(), **fields}))


def serving(available: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": "m-b"},
        "status": {
            "replicas": 1, "availableReplicas": int(available), "updatedReplicas": 1, "currentReplicas": 1,
            "conditions": [{"type": "Available", "status": "True" if available else "False"}],
        },
    }  # fmt: skip


def types(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_initialized_then_active_with_counts() -> None:
    result = apply_result(ok=True)
    status = compute_booster_status(booster(), [serving(False)], desired(), result, at=T0)
    assert types(status) == {"Initialized": "True", "Active": "False"}
    status = compute_booster_status(
        {**booster(), "status": status}, [serving(True)], desired(), result, at=T1
    )
    assert types(status) == {"Initialized": "True", "Active": "True"}
    assert status["availableReplicas"] == 1
    assert status["observedGeneration"] == 1


def test_converter_error_fails_and_fix_clears_it() -> None:
    bad = desired(2, [ConversionError(field="spec.backend.workers", message="prefill worker not found")])
    failed = compute_booster_status(booster(2), [], bad, None, at=T0)
    assert types(failed)["Failed"] == "True"
    assert (
        "prefill worker not found"
        in next(c for c in failed["conditions"] if c["type"] == "Failed")["message"]
    )
    fixed = compute_booster_status(
        {**booster(3), "status": failed},
        [serving(True)],
        desired(3),
        apply_result(owner=owner(3), ok=True),
        at=T1,
    )
    assert types(fixed) == {"Active": "True", "Failed": "False", "Initialized": "True"}


def test_apply_failure_fails_and_stale_result_is_ignored() -> None:
    failed = apply_result(owner=owner(1), ok=False, message="422: invalid", permanent=True)
    assert types(compute_booster_status(booster(), [], desired(1), failed, at=T0))["Failed"] == "True"
    # a failure of an older generation says nothing about the new desired set
    assert "Failed" not in types(compute_booster_status(booster(2), [], desired(2), failed, at=T0))


def test_disaggregated_condition_for_pd_backends() -> None:
    ok = apply_result(ok=True)
    assert (
        types(compute_booster_status(booster(pd=True), [serving(False)], desired(), ok, at=T0))[
            "Disaggregated"
        ]
        == "False"
    )
    assert (
        types(compute_booster_status(booster(pd=True), [serving(True)], desired(), ok, at=T0))[
            "Disaggregated"
        ]
        == "True"
    )
    assert "Disaggregated" not in types(
        compute_booster_status(booster(), [serving(True)], desired(), ok, at=T0)
    )


def test_a_stale_desired_set_never_moves_status_backwards() -> None:
    current = compute_booster_status(
        booster(3), [serving(True)], desired(3), apply_result(owner=owner(3), ok=True)
    )
    stale = compute_booster_status({**booster(3), "status": current}, [serving(True)], desired(2), None)
    assert stale["observedGeneration"] == 3
    assert types(stale)["Active"] == "True"


def test_a_failed_modelserving_fails_its_booster_until_it_recovers() -> None:
    refused = serving(False)
    refused["status"]["conditions"].append(
        {"type": "Failed", "status": "True", "reason": "Invalid", "message": 'Pod "m-b-0-x-0-0" is invalid'}
    )
    ok = apply_result(ok=True)
    status = compute_booster_status(booster(), [refused], desired(), ok, at=T0)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True"
    assert failed["message"] == 'ModelServing m-b: Pod "m-b-0-x-0-0" is invalid'
    status = compute_booster_status({**booster(), "status": status}, [serving(True)], desired(), ok, at=T1)
    by_type = {c["type"]: c["status"] for c in status["conditions"]}
    assert by_type["Failed"] == "False"
    assert by_type["Active"] == "True"


def test_not_active_says_which_serving_waits_and_why() -> None:
    ok = apply_result(ok=True)
    plain = compute_booster_status(booster(), [serving(False)], desired(), ok, pods={"m-b": []}, at=T0)
    assert (
        next(c for c in plain["conditions"] if c["type"] == "Active")["message"]
        == "ModelBooster not ready yet"
    )
    waiting = {
        "metadata": {"name": "m-b-0-decode-0-0"},
        "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no node fits"},
        ]},
    }  # fmt: skip
    status = compute_booster_status(
        booster(), [serving(False)], desired(), ok, pods={"m-b": [waiting]}, at=T0
    )
    active = next(c for c in status["conditions"] if c["type"] == "Active")
    assert (active["status"], active["reason"]) == ("False", "ModelProcessing")
    assert active["message"] == (
        "ModelBooster not ready yet: ModelServing m-b: pod m-b-0-decode-0-0 is Unschedulable: no node fits"
    )


def test_a_new_booster_waits_for_its_first_apply_result_but_never_hides_a_failure() -> None:
    from ferry_status.reconciler import awaiting_first_apply

    new = booster()
    assert awaiting_first_apply(new, None, None)  # the converter has not answered yet
    assert awaiting_first_apply(new, desired(), None)  # the applier has not answered yet
    assert not awaiting_first_apply(new, desired(), apply_result(ok=True))
    assert not awaiting_first_apply(new, desired(), apply_result(ok=False, message="no"))
    failed = desired(errors=[ConversionError(field="spec", message="bad")])
    assert not awaiting_first_apply(new, failed, None)
    # a result for an older generation says nothing about the current children
    assert awaiting_first_apply(booster(2), desired(2), apply_result(owner=owner(1), ok=True))
    # an object with a status is always reconciled: what it shows must follow every change
    assert not awaiting_first_apply({**new, "status": {"observedGeneration": 1}}, desired(), None)


def test_a_first_status_waits_until_the_view_shows_what_the_apply_created() -> None:
    from ferry_schemas.bus import ChildResult
    from ferry_status.reconciler import awaiting_first_apply

    def child(name: str, action: str) -> ChildResult:
        return ChildResult(api_version="v1", kind="Pod", name=name, action=action)  # type: ignore[arg-type]

    applied = apply_result(ok=True, children=[child("p-0", "created"), child("p-1", "unchanged")])
    new = booster()
    assert awaiting_first_apply(new, desired(), applied, lambda kind, name: False)  # p-0 not seen yet
    assert not awaiting_first_apply(new, desired(), applied, lambda kind, name: name == "p-0")
    # an unchanged child is not waited for, nor is anything after a failure
    assert not awaiting_first_apply(new, desired(), applied, lambda kind, name: name != "p-1")
    failed = apply_result(ok=False, message="no", children=[child("p-0", "created")])
    assert not awaiting_first_apply(new, desired(), failed, lambda kind, name: False)
    # an object with a status never waits
    assert not awaiting_first_apply({**new, "status": {"x": 1}}, desired(), applied, lambda kind, name: False)


def test_the_hold_starts_at_the_creation_or_the_last_step() -> None:
    from datetime import datetime

    from ferry_status.reconciler import hold_start

    created = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}}
    at = datetime.fromisoformat("2026-01-01T00:00:00+00:00").timestamp()
    assert hold_start(created) == at
    assert hold_start(created, at + 6) == at + 6  # counted from the pipeline's last step when later
    assert hold_start(created, at - 60) == at
    assert hold_start({"metadata": {}}) is None


def test_holds_extend_while_the_pipeline_works_through_a_backlog_and_are_bounded() -> None:
    from ferry_status.reconciler import FirstWriteHolds

    holds = FirstWriteHolds(hold=5.0, limit=60.0)
    a, b, c = (("modelboosters", "ns", n) for n in "abc")
    assert holds.hold(a, 100.0, 101.0)
    assert holds.hold(b, 100.0, 101.0)
    assert holds.hold(a, 100.0, 104.9)
    assert not holds.hold(a, 100.0, 105.0)  # nothing moved: the fixed hold ends
    # the pipeline moves (b takes a step, c is released): held objects keep waiting for their turn
    assert holds.hold(c, 100.0, 101.0)
    assert holds.hold(b, 120.0, 121.0)
    holds.release(c, 130.0)
    assert holds.hold(a, 100.0, 134.0)
    assert holds.ended(134.0) == []
    assert holds.next_end() == 135.0  # 5 s after the last movement (c released at 130)
    # stalled: every hold ends `hold` seconds after the last movement
    assert set(holds.ended(135.0)) == {a, b}
    assert not holds
    # however far behind the pipeline is, no hold outlasts `limit` after the object's own last step
    holds.hold(a, 100.0, 101.0)
    for moment in range(101, 160, 2):
        holds.hold(b, float(moment), float(moment))  # b keeps moving
        assert holds.hold(a, 100.0, float(moment))
    assert not holds.hold(a, 100.0, 160.0)
    # a clock behind the server's never holds longer than `hold`
    assert holds.hold(c, 10_000.0, 200.0)
    assert not holds.hold(c, 10_000.0, 205.0)
    # 0 disables the hold (an interim status is written first)
    assert not FirstWriteHolds(hold=0.0, limit=60.0).hold(a, 100.0, 100.0)


def test_the_last_step_is_the_latest_desired_set_or_result_of_this_object() -> None:
    from ferry_status.reconciler import last_step

    new = booster()
    assert last_step(new, None, None) is None
    produced = desired(produced=100.0)
    assert last_step(new, produced, None) == 100.0
    applied = apply_result(ok=True, finished_at=datetime.fromtimestamp(150.0, UTC))
    assert last_step(new, produced, applied) == 150.0
    other = apply_result(owner=owner().model_copy(update={"uid": "someone-else"}), ok=True)
    assert last_step(new, produced, other) == 100.0  # a result for an earlier object of that name


def test_a_trigger_names_the_objects_whose_status_it_affects() -> None:
    from ferry_schemas import labels as L
    from ferry_schemas.bus import ObjectEvent
    from ferry_status.reconciler import keys_for_event

    def keys(resource: str, obj: dict[str, Any]) -> list[tuple[str, str, str]]:
        event = ObjectEvent.from_object("MODIFIED", resource, {"metadata": {"namespace": "ns"}, **obj})
        return keys_for_event(event)

    pod_labels = {
        L.MS_NAME: "mb-main",
        L.BOOSTER_MANAGED_BY: L.BOOSTER_MANAGED_BY_VALUE,
        L.BOOSTER_MODEL_NAME: "mb",
    }
    pod = {"metadata": {"name": "p", "namespace": "ns", "labels": pod_labels}, "spec": {"containers": []}}
    assert keys("pods", pod) == [("modelservings", "ns", "mb-main"), ("modelboosters", "ns", "mb")]
    assert keys("pods", {"metadata": {"name": "p", "namespace": "ns", "labels": None}}) == []
    refs = [
        {"kind": "ModelBooster", "name": "mb", "uid": "u", "controller": True},
        {"kind": "ModelBooster", "name": "other", "uid": "v"},  # not the controller
    ]
    serving = {"metadata": {"name": "mb-main", "namespace": "ns", "ownerReferences": refs}, "spec": {"x": 1}}
    assert keys("modelservings", serving) == [
        ("modelservings", "ns", "mb-main"),
        ("modelboosters", "ns", "mb"),
    ]
    assert keys("modelboosters", {"metadata": {"name": "mb", "namespace": "ns"}}) == [
        ("modelboosters", "ns", "mb")
    ]
    assert keys("services", {"metadata": {"name": "s", "namespace": "ns"}}) == []


def test_a_desired_set_or_apply_result_names_its_owner() -> None:
    from ferry_schemas.bus import DESIRED_STREAM, RESULTS_STREAM
    from ferry_status.reconciler import keys_for_owner

    booster, serving = ("modelboosters", "ns", "mb"), ("modelservings", "ns", "mb-main")
    assert keys_for_owner(DESIRED_STREAM, booster) == [booster]
    assert keys_for_owner(RESULTS_STREAM, booster) == [booster]
    assert keys_for_owner(RESULTS_STREAM, serving) == [serving]
    assert keys_for_owner(DESIRED_STREAM, serving) == []  # its apply result follows
