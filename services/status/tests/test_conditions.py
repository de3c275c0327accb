from ferry_status.conditions import condition, merge_condition, merge_serving_condition

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"


def test_transition_time_kept_when_status_unchanged() -> None:
    first = merge_condition([], condition("Active", False, "ModelProcessing", "not yet"), at=T0)
    again = merge_condition(first, condition("Active", False, "ModelProcessing", "still not"), at=T1)
    assert again == [{**first[0], "message": "still not"}]
    assert again[0]["lastTransitionTime"] == T0


def test_transition_time_moves_when_status_flips() -> None:
    first = merge_condition([], condition("Active", False, "ModelProcessing", "x"), at=T0)
    flipped = merge_condition(first, condition("Active", True, "ModelAvailable", "ready"), at=T1)
    assert flipped[0]["status"] == "True"
    assert flipped[0]["lastTransitionTime"] == T1


def test_serving_merge_flips_exclusive_conditions_and_keeps_messages() -> None:
    progressing = merge_serving_condition([], condition("Progressing", True, "GroupProgressing", "a"), at=T0)
    available = merge_serving_condition(
        progressing, condition("Available", True, "AllGroupsReady", "ok"), at=T1
    )
    by_type = {c["type"]: c for c in available}
    assert by_type["Progressing"]["status"] == "False"
    assert by_type["Progressing"]["lastTransitionTime"] == T1
    assert by_type["Available"]["status"] == "True"
    # same status again: the message is not refreshed (Kthena's rule)
    again = merge_serving_condition(available, condition("Available", True, "AllGroupsReady", "other"), at=T1)
    assert {c["type"]: c for c in again}["Available"]["message"] == "ok"
