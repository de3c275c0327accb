"""The object trigger's slim decode: the owner it names and the messages it refuses, as the full model."""

import msgspec
import pytest
from ferry_applier.triggers import decode_trigger, owner_of
from ferry_schemas import labels as L
from ferry_schemas.bus import ObjectEvent
from pydantic import ValidationError


def event(resource: str, meta: dict[str, object], event_type: str = "MODIFIED") -> bytes:
    obj = {"metadata": {"name": "x", "namespace": "ns", "uid": "u1", "resourceVersion": "7", **meta}}
    return ObjectEvent.from_object(event_type, resource, obj).to_bytes()  # type: ignore[arg-type]


def test_the_controller_reference_names_the_owner() -> None:
    ref = {"kind": "ModelServing", "name": "ms", "uid": "o", "controller": True}
    other = {"kind": "ModelBooster", "name": "b", "uid": "p"}
    trigger = decode_trigger(event("podgroups", {"ownerReferences": [other, ref]}))
    assert owner_of(trigger) == ("modelservings", "ns", "ms")
    assert (trigger.resource_version, trigger.deleted) == ("7", False)
    assert decode_trigger(event("podgroups", {}, "DELETED")).deleted


def test_a_pod_without_references_is_its_serving_s_by_label_and_others_are_nobody_s() -> None:
    assert owner_of(decode_trigger(event("pods", {"labels": {L.MS_NAME: "ms"}}))) == (
        "modelservings",
        "ns",
        "ms",
    )
    assert owner_of(decode_trigger(event("services", {"labels": {L.MS_NAME: "ms"}}))) is None
    not_controller = {"kind": "ModelServing", "name": "ms", "uid": "o"}
    assert owner_of(decode_trigger(event("pods", {"ownerReferences": [not_controller]}))) is None


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b'{"type":"ADDED","resource":"pods","namespace":"ns","name":"x","uid":"u","object":{}}',
        b'{"type":"GONE","resource":"pods","namespace":"ns","name":"x","uid":"u","resourceVersion":"1","object":{}}',
        b'{"type":"ADDED","resource":"pods","namespace":"ns","name":"x","uid":"u","resourceVersion":"1","object":[]}',
    ],
)
def test_what_the_full_model_refuses_is_refused(data: bytes) -> None:
    with pytest.raises(ValidationError):
        ObjectEvent.model_validate_json(data)
    with pytest.raises(msgspec.DecodeError):
        decode_trigger(data)
