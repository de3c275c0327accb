"""The views' changes name the keys to queue: none before start, every held key at start."""

from typing import Any

from ferry_schemas.bus import DESIRED_STREAM, RESULTS_STREAM, ObjectEvent, Resource
from ferry_schemas.runtime.view import ObjectView
from ferry_status.triggers import Triggers
from opentelemetry import context as otel_context
from opentelemetry import trace


class Recorded:
    """Stands in for the work queue's ``add``: records each key and the trace id it came with."""

    def __init__(self) -> None:
        self.added: list[tuple[tuple[str, str, str], int]] = []

    def wants_context(self, key: tuple[str, str, str]) -> bool:
        return True

    def add(self, key: tuple[str, str, str], context: otel_context.Context | None = None) -> None:
        span = trace.get_current_span(context) if context is not None else None
        self.added.append((key, span.get_span_context().trace_id if span is not None else 0))


def obj(name: str, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", "resourceVersion": "1", **meta}}


def serving(name: str, booster: str) -> dict[str, Any]:
    refs = [{"kind": "ModelBooster", "name": booster, "uid": f"u-{booster}", "controller": True}]
    return obj(name, ownerReferences=refs)


def test_changes_queue_nothing_until_start_and_start_queues_every_held_key() -> None:
    view = ObjectView(None, [Resource.MODEL_BOOSTERS, Resource.MODEL_SERVINGS], pack=True)  # type: ignore[arg-type]
    queue = Recorded()
    triggers = Triggers(view, queue)  # type: ignore[arg-type]
    view.on_change(triggers.object_changed)
    view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, obj("mb")))
    view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_SERVINGS, serving("mb-main", "mb")))
    triggers.pipeline_changed(DESIRED_STREAM, ("modelboosters", "ns", "mb"), None)
    assert queue.added == []  # the snapshot is loading: no reconcile may read it yet

    assert triggers.start() == 2
    assert [key for key, _ in queue.added] == [
        ("modelservings", "ns", "mb-main"),
        ("modelboosters", "ns", "mb"),
    ]


def test_a_change_queues_its_keys_with_its_trace_and_not_our_own_write() -> None:
    view = ObjectView(None, [Resource.MODEL_SERVINGS], pack=True)  # type: ignore[arg-type]
    queue = Recorded()
    ours = {"7"}
    triggers = Triggers(
        view,
        queue,
        own_write=lambda event: event.resource_version in ours,  # type: ignore[arg-type]
    )
    view.on_change(triggers.object_changed)
    triggers.start()
    traced = {"traceparent": f"00-{0xABC:032x}-{1:016x}-01"}
    view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_SERVINGS, serving("mb-main", "mb")), traced)
    assert queue.added == [
        (("modelservings", "ns", "mb-main"), 0xABC),
        (("modelboosters", "ns", "mb"), 0xABC),
    ]

    queue.added.clear()
    written = serving("mb-main", "mb")
    written["metadata"]["resourceVersion"] = "7"  # our status write coming back: only its owner
    written["status"] = {"replicas": 0}
    view.apply(ObjectEvent.from_object("MODIFIED", Resource.MODEL_SERVINGS, written))
    assert [key for key, _ in queue.added] == [("modelboosters", "ns", "mb")]

    queue.added.clear()
    relisted = {**written, "metadata": {**written["metadata"], "resourceVersion": "8"}}
    view.apply(ObjectEvent.from_object("SYNC", Resource.MODEL_SERVINGS, relisted))
    assert queue.added == []  # nothing but its resourceVersion changed: nothing to reconcile
    triggers.pipeline_changed(RESULTS_STREAM, ("modelservings", "ns", "mb-main"), traced)
    assert queue.added == [(("modelservings", "ns", "mb-main"), 0xABC)]


def test_only_the_keys_this_replica_owns_are_queued() -> None:
    view = ObjectView(None, [Resource.MODEL_BOOSTERS], pack=True)  # type: ignore[arg-type]
    queue = Recorded()
    triggers = Triggers(view, queue, owns=lambda key: key[2] != "theirs")  # type: ignore[arg-type]
    view.on_change(triggers.object_changed)
    view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, obj("theirs")))
    assert triggers.start() == 0
    view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, obj("mine")))
    view.apply(ObjectEvent.from_object("MODIFIED", Resource.MODEL_BOOSTERS, obj("theirs")))
    assert [key for key, _ in queue.added] == [("modelboosters", "ns", "mine")]


def test_start_queues_an_object_whose_status_lags_in_the_trace_of_its_last_change() -> None:
    view = ObjectView(None, [Resource.MODEL_BOOSTERS], pack=True)  # type: ignore[arg-type]
    queue = Recorded()
    triggers = Triggers(view, queue)  # type: ignore[arg-type]
    view.on_change(triggers.object_changed)

    def heard(kind: str, booster: dict[str, Any], trace_id: int) -> None:
        event = ObjectEvent.from_object(kind, Resource.MODEL_BOOSTERS, booster)  # type: ignore[arg-type]
        view.apply(event, {"traceparent": f"00-{trace_id:032x}-{1:016x}-01"})

    # new, no status yet: its start reconcile is its creation's
    heard("ADDED", obj("new", generation=1), 0xA)
    # edited: status observed generation 1 of 2
    edited = {**obj("edited", generation=2), "status": {"observedGeneration": 1}}
    heard("MODIFIED", edited, 0xB)
    # up to date: its start reconcile is only a resync, in a trace of its own
    settled = {**obj("settled", generation=3), "status": {"observedGeneration": 3}}
    heard("SYNC", settled, 0xC)
    # created, then its status written: the write's change supersedes the creation's
    heard("ADDED", obj("caught", generation=1), 0xD)
    caught = {**obj("caught", generation=1), "status": {"observedGeneration": 1}}
    heard("MODIFIED", caught, 0xE)

    assert triggers.start() == 4
    assert sorted(queue.added) == [
        (("modelboosters", "ns", "caught"), 0),
        (("modelboosters", "ns", "edited"), 0xB),
        (("modelboosters", "ns", "new"), 0xA),
        (("modelboosters", "ns", "settled"), 0),
    ]
    queue.added.clear()
    assert triggers.resync() == 4  # later resyncs start traces of their own
    assert all(trace_id == 0 for _, trace_id in queue.added)
