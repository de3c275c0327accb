"""Folding a POST's Update entry into the manager's Apply entry (``ferry_applier.ownership``)."""

from __future__ import annotations

from ferry_applier.ownership import folded, posted_entries, union


def entry(manager: str, operation: str, fields: dict[str, object], **extra: object) -> dict[str, object]:
    return {"manager": manager, "operation": operation, "fieldsType": "FieldsV1", "fieldsV1": fields, **extra}


def test_union_merges_nested_field_sets() -> None:
    a = {"f:spec": {"f:modelName": {}, "f:rules": {}}}
    b = {"f:spec": {"f:loraAdapters": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}
    assert union(a, b) == {
        "f:spec": {"f:modelName": {}, "f:rules": {}, "f:loraAdapters": {}},
        "f:metadata": {"f:labels": {"f:a": {}}},
    }


def test_posted_entries_are_the_managers_own_updates_of_the_object() -> None:
    stored = {
        "metadata": {
            "managedFields": [
                entry("ferry", "Update", {"f:spec": {}}),
                entry("ferry", "Update", {"f:status": {}}, subresource="status"),
                entry("someone", "Update", {"f:metadata": {}}),
                entry("ferry", "Apply", {"f:spec": {}}),
            ]
        }
    }
    assert posted_entries(stored, "ferry") == [entry("ferry", "Update", {"f:spec": {}})]
    assert posted_entries(stored, "other") == []
    assert posted_entries({"metadata": {}}, "ferry") == []


def test_fold_keeps_other_managers_and_subresources_in_place() -> None:
    entries = [
        entry("someone", "Update", {"f:metadata": {"f:annotations": {}}}),
        entry("ferry", "Update", {"f:spec": {"f:loraAdapters": {}, "f:modelName": {}}}, time="t1"),
        entry("ferry", "Update", {"f:status": {}}, subresource="status"),
        entry("ferry", "Apply", {"f:spec": {"f:modelName": {}}}, time="t2"),
    ]
    assert folded(entries, "ferry") == [
        entries[0],
        entry("ferry", "Apply", {"f:spec": {"f:modelName": {}, "f:loraAdapters": {}}}, time="t2"),
        entries[2],
    ]


def test_fold_without_an_apply_entry_turns_the_update_into_one() -> None:
    entries = [entry("ferry", "Update", {"f:spec": {"f:modelName": {}}}, time="t1")]
    assert folded(entries, "ferry") == [entry("ferry", "Apply", {"f:spec": {"f:modelName": {}}}, time="t1")]
    assert folded([], "ferry") == []
