"""The owner an object change re-queues (the view hands the applier the event it decoded)."""

import msgspec
import pytest
from ferry_applier.triggers import owner_of
from ferry_schemas import labels as L
from ferry_schemas.bus import ObjectEvent
from ferry_schemas.object_trigger import decode_trigger
from pydantic import ValidationError


def event(resource: str, meta: dict[str, object], event_type: str = "MODIFIED") -> ObjectEvent:
    obj = {"metadata": {"name": "x", "namespace": "ns", "uid": "u1", "resourceVersion": "7", **meta}}
    return ObjectEvent.from_object(event_type, resource, obj)  # type: ignore[arg-type]


def test_the_controller_reference_names_the_owner() -> None:
    ref = {"kind": "ModelServing", "name": "ms", "uid": "o", "controller": True}
    other = {"kind": "ModelBooster", "name": "b", "uid": "p"}
    serving = ("modelservings", "ns", "ms")
    assert owner_of(event("podgroups", {"ownerReferences": [other, ref]})) == serving
    assert owner_of(event("podgroups", {"ownerReferences": [ref]}, "DELETED")) == serving


def test_a_pod_without_references_is_its_serving_s_by_label_and_others_are_nobody_s() -> None:
    assert owner_of(event("pods", {"labels": {L.MS_NAME: "ms"}})) == ("modelservings", "ns", "ms")
    assert owner_of(event("services", {"labels": {L.MS_NAME: "ms"}})) is None
    not_controller = {"kind": "ModelServing", "name": "ms", "uid": "o"}
    assert owner_of(event("pods", {"ownerReferences": [not_controller]})) is None


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b'{"type":"ADDED","resource":"pods","namespace":"ns","name":"x","uid":"u","object":{}}',
        b'{"type":"GONE","resource":"pods","namespace":"ns","name":"x","uid":"u","resourceVersion":"1","object":{}}',
        b'{"type":"ADDED","resource":"pods","namespace":"ns","name":"x","uid":"u","resourceVersion":"1","object":[]}',
    ],
)
def test_what_the_full_model_refuses_the_slim_trigger_refuses(data: bytes) -> None:
    with pytest.raises(ValidationError):
        ObjectEvent.model_validate_json(data)
    with pytest.raises(msgspec.DecodeError):
        decode_trigger(data)
