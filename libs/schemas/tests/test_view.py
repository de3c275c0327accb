"""The bus-fed object view's indexes (fed directly; the bus feeding is covered by integration tests)."""

import sys
from typing import Any

import pytest
from ferry_schemas.bus import ObjectEvent, Resource
from ferry_schemas.runtime.packed import Packed
from ferry_schemas.runtime.view import Change, ObjectView
from pydantic import ValidationError


def pod(name: str, owner: str, labels: dict[str, str], ns: str = "ns") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "labels": labels,
            "ownerReferences": [{"uid": owner, "kind": "ModelServing", "name": "ms"}],
            "managedFields": [{"manager": "ferry"}],
        },
    }


@pytest.fixture(params=[False, True], ids=["parsed", "packed"])
def packed(request: pytest.FixtureRequest) -> bool:
    """Every test runs against both ways of keeping objects."""
    return bool(request.param)


def view(packed: bool) -> ObjectView:
    return ObjectView(None, [Resource.PODS, Resource.SERVICES], pack=packed)  # type: ignore[arg-type]


def test_get_list_and_owner_index_follow_changes(packed: bool) -> None:
    v = view(packed)
    seen: list[str] = []
    v.on_change(lambda c: seen.append(f"{c.event.type} {c.event.name}{' same' if c.same else ''}"))
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("a", "o1", {"app": "x"})))
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("b", "o1", {"app": "y"})))
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("c", "o2", {"app": "x"}, ns="other")))
    assert v.get("pods", "ns", "a") is not None
    assert "managedFields" not in v.get("pods", "ns", "a")["metadata"]  # type: ignore[index]
    assert [p["metadata"]["name"] for p in v.list("pods", "ns")] == ["a", "b"]
    assert [p["metadata"]["name"] for p in v.list("pods", "ns", {"app": "x"})] == ["a"]
    assert [p["metadata"]["name"] for p in v.owned("o1")] == ["a", "b"]
    assert v.owned("o1", "services") == []

    moved = pod("a", "o2", {"app": "x"})
    v.apply(ObjectEvent.from_object("MODIFIED", "pods", moved))
    assert [p["metadata"]["name"] for p in v.owned("o1")] == ["b"]
    assert [p["metadata"]["name"] for p in v.owned("o2")] == ["a", "c"]

    relisted = {**moved, "metadata": {**moved["metadata"], "resourceVersion": "9"}}
    v.apply(ObjectEvent.from_object("SYNC", "pods", relisted))
    v.apply(ObjectEvent.from_object("DELETED", "pods", moved))
    assert v.get("pods", "ns", "a") is None
    assert [p["metadata"]["name"] for p in v.owned("o2")] == ["c"]
    assert len(v) == 2
    assert seen == ["ADDED a", "ADDED b", "ADDED c", "MODIFIED a", "SYNC a same", "DELETED a"]


def test_stamp_is_the_uid_and_resource_version_get_shows(packed: bool) -> None:
    v = view(packed)
    assert v.stamp("pods", "ns", "a") is None
    changed = pod("a", "o1", {})
    changed["metadata"]["resourceVersion"] = "7"
    v.apply(ObjectEvent.from_object("ADDED", "pods", changed))
    meta = v.get("pods", "ns", "a")["metadata"]  # type: ignore[index]
    assert v.stamp("pods", "ns", "a") == (meta["uid"], meta["resourceVersion"]) == ("uid-a", "7")
    v.apply(ObjectEvent.from_object("DELETED", "pods", changed))
    assert v.stamp("pods", "ns", "a") is None


def test_a_failing_callback_does_not_stop_the_view(packed: bool) -> None:
    v = view(packed)

    def broken(_: Change) -> None:
        raise RuntimeError("bug")

    v.on_change(broken)
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("a", "o1", {})))
    assert v.get("pods", "ns", "a") is not None


@pytest.mark.parametrize("indexed", [None, {"app"}, set()], ids=["all-labels", "app-only", "no-labels"])
def test_label_selection_follows_label_changes_and_deletes(packed: bool, indexed: set[str] | None) -> None:
    """The same answers whichever label keys the index holds (the rest are filtered)."""
    v = ObjectView(None, [Resource.PODS], pack=packed, indexed_labels=indexed)  # type: ignore[arg-type]
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("a", "o1", {"app": "x", "role": "leader"})))
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("b", "o1", {"app": "x", "role": "worker"})))
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("c", "o1", {"app": "x"}, ns="other")))

    def names(selector: dict[str, str], ns: str = "ns") -> list[str]:
        return [p["metadata"]["name"] for p in v.list("pods", ns, selector)]

    assert names({"app": "x"}) == ["a", "b"]
    assert names({"app": "x", "role": "worker"}) == ["b"]
    assert names({"app": "x", "role": "none"}) == []
    assert names({"app": "x"}, "other") == ["c"]
    v.apply(ObjectEvent.from_object("MODIFIED", "pods", pod("b", "o1", {"app": "y", "role": "worker"})))
    assert names({"app": "x"}) == ["a"]
    assert names({"app": "y"}) == ["b"]
    v.apply(ObjectEvent.from_object("DELETED", "pods", pod("a", "o1", {"app": "x", "role": "leader"})))
    assert names({"app": "x"}) == []
    assert names({"role": "leader"}) == []
    assert {key[2] for key in v._by_label} <= ({"app", "role"} if indexed is None else indexed)
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("d", "o1", {"app": "x", "role": "leader"})))
    assert names({"role": "leader"}) == ["d"]
    assert names({"app": "x", "role": "leader"}) == ["d"]
    stored = v._objects[("pods", "ns", "d")]
    if isinstance(stored, Packed):  # the record keeps the indexed labels only, the object all of them
        assert {k for k, _ in stored.label_pairs()} == ({"app", "role"} if indexed is None else indexed)


def test_a_change_of_nothing_kept_is_told_apart(packed: bool) -> None:
    project = {Resource.PODS: lambda o: {**o, "status": {}}}
    v = ObjectView(None, [Resource.PODS], project=project, pack=packed)  # type: ignore[arg-type]
    first = pod("a", "o1", {"app": "x"})
    assert not v.apply(ObjectEvent.from_object("ADDED", "pods", first))
    status_only = {
        **first,
        "metadata": {**first["metadata"], "resourceVersion": "2"},
        "status": {"podIP": "1"},
    }
    assert v.apply(ObjectEvent.from_object("MODIFIED", "pods", status_only))  # projected away: same
    relabelled = pod("a", "o1", {"app": "y"})
    assert not v.apply(ObjectEvent.from_object("MODIFIED", "pods", relabelled))
    assert not v.apply(ObjectEvent.from_object("DELETED", "pods", relabelled))


def serving(name: str) -> dict[str, Any]:
    """A ModelServing as the API server stores it: a large spec shared in shape by every serving."""
    container = {
        "name": "engine",
        "image": "vllm/vllm-openai:v0.10.1",
        "args": ["--model", f"/models/{name}", "--served-model-name", name, "--port", "8000"],
        "env": [{"name": f"VAR_{i}", "value": str(i)} for i in range(20)],
        "resources": {"limits": {"cpu": "4", "memory": "16Gi"}, "requests": {"cpu": "2", "memory": "8Gi"}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5},
    }
    return {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelServing",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "labels": {"app": name, "tier": "serving"},
            "ownerReferences": [{"uid": "booster-uid", "kind": "ModelBooster", "name": name}],
        },
        "spec": {
            "replicas": 1,
            "template": {
                "roles": [
                    {
                        "name": "leader",
                        "replicas": 1,
                        "entryTemplate": {
                            "spec": {
                                "containers": [container],
                                "nodeSelector": {"pool": "gpu"},
                            }
                        },
                    }
                ]
            },
        },
        "status": {"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]},
    }


def deep_size(value: Any) -> int:
    if isinstance(value, Packed):
        parts = (value.blob, value.version, value.uid, value.labels, value.owners)
        return sys.getsizeof(value) + sum(deep_size(part) for part in parts)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(deep_size(k) + deep_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sys.getsizeof(value) + sum(deep_size(v) for v in value)
    return sys.getsizeof(value)


def test_a_packed_view_reads_back_exactly_what_it_stored_in_a_fraction_of_the_memory() -> None:
    parsed, packed = view(False), view(True)
    for v in (parsed, packed):
        for i in range(300):
            v.apply(ObjectEvent.from_object("ADDED", "modelservings", serving(f"s{i:03d}")))
    for i in (0, 150, 299):
        name = f"s{i:03d}"
        assert (
            packed.get("modelservings", "ns", name)
            == parsed.get("modelservings", "ns", name)
            == serving(name)
        )
    assert packed.list("modelservings", "ns", {"app": "s007"}) == [serving("s007")]
    assert [o["metadata"]["name"] for o in packed.owned("booster-uid")] == [f"s{i:03d}" for i in range(300)]
    kept = {
        name: sum(deep_size(obj) for key, obj in v._objects.items() if key[0] == "modelservings")
        for name, v in (("parsed", parsed), ("packed", packed))
    }
    assert kept["packed"] * 5 < kept["parsed"], kept


def test_the_label_index_keeps_one_name_as_itself_and_forgets_emptied_values(packed: bool) -> None:
    v = view(packed)

    def add(name: str, app: str) -> None:
        v.apply(ObjectEvent.from_object("ADDED", "pods", pod(name, "o", {"app": app})))

    add("a", "x")
    add("b", "x")
    add("c", "y")
    index = v._by_label
    assert index[("pods", "ns", "app", "x")] == {"a", "b"}
    assert index[("pods", "ns", "app", "y")] == "c"  # a single name is not wrapped in a set
    v.apply(ObjectEvent.from_object("DELETED", "pods", pod("a", "o", {"app": "x"})))
    assert index[("pods", "ns", "app", "x")] == "b"
    assert [p["metadata"]["name"] for p in v.list("pods", "ns", {"app": "x"})] == ["b"]
    add("b", "y")  # relabelled: leaves x, joins y
    assert ("pods", "ns", "app", "x") not in index
    assert index[("pods", "ns", "app", "y")] == {"b", "c"}
    assert v.list("pods", "ns", {"app": "x"}) == []
    assert [p["metadata"]["name"] for p in v.list("pods", "ns", {"app": "y"})] == ["b", "c"]


def test_keys_name_every_held_object_of_a_resource(packed: bool) -> None:
    v = view(packed)
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("b", "o1", {})))
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("a", "o1", {})))
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("c", "o1", {}, ns="other")))
    v.apply(ObjectEvent.from_object("DELETED", "pods", pod("b", "o1", {})))
    assert sorted(v.keys("pods")) == [("ns", "a"), ("other", "c")]
    assert v.keys("services") == []


@pytest.mark.parametrize(
    "wire",
    [
        ObjectEvent.from_object("ADDED", "pods", pod("p", "o", {"app": "x"})).to_bytes(),
        ObjectEvent.from_object("MODIFIED", "modelservings", serving("s")).to_bytes(),  # with a generation
        b'{"type":"SYNC","resource":"pods","namespace":"ns","name":"p","uid":"u","resourceVersion":"1",'
        b'"object":{}}',  # no generation, no observedAt: the model's defaults
        b'{"type":"DELETED","resource":"pods","namespace":"ns","name":"p","uid":"u",'
        b'"resource_version":"1","generation":"3","object":{},"observedAt":"2026-01-01T00:00:00Z"}',
    ],
    ids=["pod", "serving", "defaults", "snake-case-and-coerced"],
)
def test_an_event_decodes_as_the_model_validates_it(wire: bytes) -> None:
    fast, model = ObjectEvent.from_json(wire), ObjectEvent.model_validate_json(wire)
    assert fast.model_fields_set == model.model_fields_set
    if "observedAt" not in wire.decode():
        fast.observed_at = model.observed_at  # "now" when each was built
    assert fast == model


@pytest.mark.parametrize(
    "wire",
    [
        b"not json",
        b'{"type":"EXPLODED","resource":"pods","namespace":"ns","name":"p","uid":"u","resourceVersion":"1",'
        b'"object":{}}',
        b'{"type":"ADDED","resource":"pods","namespace":"ns","name":"p","uid":"u","resourceVersion":"1",'
        b'"object":{},"observedAt":null}',
        b'{"type":"ADDED","resource":"pods","namespace":"ns","name":"p","uid":"u","resourceVersion":"1"}',
    ],
    ids=["not-json", "bad-type", "null-observed-at", "no-object"],
)
def test_what_the_model_refuses_is_refused(wire: bytes) -> None:
    with pytest.raises(ValidationError):
        ObjectEvent.model_validate_json(wire)
    with pytest.raises(ValidationError):
        ObjectEvent.from_json(wire)
