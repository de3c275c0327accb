"""The bus-fed object view's indexes (fed directly; the bus feeding is covered by integration tests)."""

from typing import Any

from ferry_schemas.bus import ObjectEvent, Resource
from ferry_schemas.runtime.view import ObjectView


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


def view() -> ObjectView:
    return ObjectView(None, [Resource.PODS, Resource.SERVICES])  # type: ignore[arg-type]


def test_get_list_and_owner_index_follow_changes() -> None:
    v = view()
    seen: list[str] = []
    v.on_change(lambda e: seen.append(f"{e.type} {e.name}"))
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

    v.apply(ObjectEvent.from_object("DELETED", "pods", moved))
    assert v.get("pods", "ns", "a") is None
    assert [p["metadata"]["name"] for p in v.owned("o2")] == ["c"]
    assert len(v) == 2
    assert seen == ["ADDED a", "ADDED b", "ADDED c", "MODIFIED a", "DELETED a"]


def test_a_failing_callback_does_not_stop_the_view() -> None:
    v = view()

    def broken(_: ObjectEvent) -> None:
        raise RuntimeError("bug")

    v.on_change(broken)
    v.apply(ObjectEvent.from_object("ADDED", "pods", pod("a", "o1", {})))
    assert v.get("pods", "ns", "a") is not None


def test_label_selection_follows_label_changes_and_deletes() -> None:
    v = view()
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


def test_a_change_of_nothing_kept_is_told_apart() -> None:
    v = ObjectView(None, [Resource.PODS], project={Resource.PODS: lambda o: {**o, "status": {}}})  # type: ignore[arg-type]
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
