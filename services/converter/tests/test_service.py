"""The converter's handler in memory: routing, headers, tombstones, traces, the newest-event hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from ferry_converter.desired import desired_set
from ferry_converter.latest import EXPECTED_LAST_SUBJECT_SEQUENCE, StoredDesired, WrongLastSequence
from ferry_converter.service import (
    Converted,
    Converter,
    ConverterService,
    OthersDeletions,
    Pending,
    Published,
    owners_view,
    without_status,
)
from ferry_converter.settings import ConverterSettings
from ferry_local.paths import shared_dir
from ferry_schemas.bus import MSG_ID_HEADER, DesiredSet, ObjectEvent, Resource, content_hash, desired_subject
from ferry_schemas.runtime.members import owner
from ferry_schemas.runtime.view import ObjectView
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider

INPUT = shared_dir() / "reference" / "kthena" / "head" / "convert-testdata" / "input"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def booster_event(path: Path = INPUT / "model.yaml", kind: str = "ADDED", generation: int = 1) -> ObjectEvent:
    obj: dict[str, Any] = yaml.safe_load(path.read_text())
    obj["metadata"].update(uid="uid-1", resourceVersion=str(10 + generation), generation=generation)
    return ObjectEvent.from_object(kind, Resource.MODEL_BOOSTERS, obj)  # type: ignore[arg-type]


def serving_event(name: str = "ms-a") -> ObjectEvent:
    obj = {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelServing",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": "ms-uid",
            "resourceVersion": "5",
            "generation": 2,
        },
        "spec": {
            "replicas": 2,
            "template": {
                "roles": [{"name": "leader", "replicas": 1, "workerReplicas": 0, "entryTemplate": {}}]
            },
        },
    }
    return ObjectEvent.from_object("ADDED", Resource.MODEL_SERVINGS, obj)


class Harness:
    """The converter with a publisher that records what it would store (the bus is tested in
    tests/integration/test_converter_nats.py)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], DesiredSet]] = []
        self.converter = Converter(self.publish, ConverterSettings(nats_url="nats://127.0.0.1:1"))

    async def publish(self, subject: str, body: bytes, headers: dict[str, str]) -> Published:
        self.received.append((subject, dict(headers), DesiredSet.model_validate_json(body)))
        return Published(len(self.received), duplicate=False)

    async def send(self, event: ObjectEvent, context: Context | None = None) -> None:
        await self.converter.handle(event, context)


async def test_booster_event_publishes_its_desired_set() -> None:
    h = Harness()
    event = booster_event()
    await h.send(event)
    (subject, headers, desired) = h.received[0]
    assert len(h.received) == 1
    assert subject == desired_subject("modelboosters", "default", "test-model")
    assert headers[MSG_ID_HEADER] == desired.msg_id
    assert desired.owner.generation == 1
    assert desired.owner.uid == "uid-1"
    assert sorted(c["kind"] for c in desired.children) == ["ModelRoute", "ModelServer", "ModelServing"]
    assert desired.managed_kinds[:3] == ["ModelServing", "ModelServer", "ModelRoute"]
    assert desired.owner_selector == {
        "workload.serving.volcano.sh/managed-by": "workload.serving.volcano.sh",
        "workload.serving.volcano.sh/model-uid": "uid-1",
    }
    for child in desired.children:
        assert child["metadata"]["ownerReferences"] == [desired.owner.owner_reference()]


async def test_serving_event_publishes_a_workload() -> None:
    h = Harness()
    await h.send(serving_event())
    (subject, _, desired) = h.received[0]
    assert subject == "ferry.desired.modelservings.default.ms-a"
    assert desired.children == []
    assert desired.workload is not None
    assert desired.workload.replicas == 2
    assert desired.owner_selector == {"modelserving.volcano.sh/name": "ms-a"}
    assert desired.managed_kinds == ["PodGroup", "Pod", "Service"]


async def test_dotted_serving_name_is_an_error_on_an_encoded_subject() -> None:
    h = Harness()
    await h.send(serving_event("ms.v1"))
    (subject, _, desired) = h.received[0]
    assert subject == "ferry.desired.modelservings.default.ms_v1"
    assert desired.workload is None
    assert desired.errors[0].field == "metadata.name"
    assert "DNS-1035" in desired.errors[0].message


async def test_deleted_owner_publishes_a_tombstone() -> None:
    h = Harness()
    await h.send(booster_event(kind="DELETED"))
    (_, _, desired) = h.received[0]
    assert desired.deleted
    assert desired.children == []
    assert desired.owner_selector["workload.serving.volcano.sh/model-uid"] == "uid-1"


async def test_unconvertible_booster_publishes_errors_not_children() -> None:
    h = Harness()
    event = booster_event(INPUT / "pd-disaggregated-model-with-runtimeclass.yaml")
    event.object["spec"]["backend"]["workers"].pop()  # no decode worker
    await h.send(event)
    (_, _, desired) = h.received[0]
    assert desired.children == []
    assert [e.field for e in desired.errors] == ["spec.backend.workers"]
    assert "decode worker not found" in desired.errors[0].message


async def test_schema_invalid_object_is_reported_with_its_path() -> None:
    h = Harness()
    event = booster_event()
    event.object["spec"]["backend"]["workers"][0]["replicas"] = "many"
    await h.send(event)
    (_, _, desired) = h.received[0]
    assert desired.children == []
    assert any(e.field.startswith("spec.backend.workers[0].replicas") for e in desired.errors)


async def test_trace_continues_from_the_incoming_traceparent() -> None:
    h = Harness()
    parent = propagate.extract({"traceparent": TRACEPARENT})
    with TracerProvider().get_tracer("converter").start_as_current_span("convert", context=parent) as span:
        await h.send(booster_event())
    (_, headers, _) = h.received[0]
    assert headers["traceparent"].split("-")[1] == TRACE_ID
    assert headers["traceparent"].split("-")[2] == f"{span.get_span_context().span_id:016x}"


def test_a_status_only_change_is_not_converted_again_but_a_relist_is() -> None:
    converted = Converted()
    key = (Resource.MODEL_BOOSTERS, "default", "model")
    first = booster_event()
    fingerprint = converted.seen(key, first)
    assert fingerprint is not None
    converted.done(key, first, fingerprint)
    status_only = booster_event(kind="MODIFIED")
    status_only.object["status"] = {"conditions": [{"type": "Initialized", "status": "True"}]}
    status_only.object["metadata"]["resourceVersion"] = "99"
    assert converted.seen(key, status_only) is None
    assert converted.seen(key, booster_event(kind="SYNC")) is not None  # a relist may follow lost streams
    assert converted.seen(key, booster_event(kind="MODIFIED", generation=2)) is not None
    relabelled = booster_event(kind="MODIFIED")
    relabelled.object["metadata"]["labels"] = {"team": "b"}
    assert converted.seen(key, relabelled) is not None
    tombstone = booster_event(kind="DELETED")
    assert converted.seen(key, tombstone) is not None
    converted.done(key, tombstone, "x")
    assert converted.seen(key, first) is not None  # forgotten once the owner is gone


def test_pending_keeps_the_latest_event_until_it_was_converted() -> None:
    pending, key = Pending(), ("modelboosters", "default", "test-model")
    first, second = booster_event(generation=1), booster_event(generation=2)
    pending.offer(key, first)
    pending.offer(key, second)
    assert pending.take(key) is second
    third = booster_event(generation=3)
    pending.offer(key, third)  # arrived during the conversion of the second
    pending.done(key, second)
    assert pending.take(key) is third
    pending.done(key, third)
    assert pending.take(key) is None


def test_the_view_keeps_an_owner_without_its_status() -> None:
    """What makes a status write leave the kept object the same (``Change.same``): nothing queued."""
    event = booster_event()
    event.object["status"] = {"conditions": [{"type": "Initialized", "status": "True"}]}
    kept = without_status(event.object)
    assert "status" not in kept
    assert kept["spec"] is event.object["spec"]
    assert "status" in event.object  # the event itself is left whole
    no_status = {"metadata": {"name": "x"}, "spec": {}}
    assert without_status(no_status) is no_status


async def test_same_input_gives_the_same_msg_id() -> None:
    h = Harness()
    event = booster_event()
    await h.send(event)
    await h.send(event)
    await h.send(booster_event(generation=2))
    ids = [headers[MSG_ID_HEADER] for _, headers, _ in h.received]
    assert ids[0] == ids[1]
    assert ids[2] != ids[0]
    assert ids[2].startswith("uid-1/2/")
    assert json.loads(h.received[0][2].to_bytes()) == json.loads(h.received[1][2].to_bytes()) | {
        "producedAt": json.loads(h.received[0][2].to_bytes())["producedAt"]
    }


def test_wire_is_the_published_bytes_and_the_content_id() -> None:
    """``DesiredSet.wire`` dumps once for both: the bytes are ``to_bytes()`` and the id hashes the
    content without ``producedAt`` (two sets that differ only in when they were made share it)."""
    desired = desired_set(booster_event())
    body, msg_id = desired.wire()
    assert body == desired.to_bytes()
    content = desired.model_dump(mode="json", exclude={"produced_at"}, exclude_none=True)
    assert msg_id == f"uid-1/1/{content_hash(content)}" == desired.msg_id
    later = desired.model_copy(update={"produced_at": desired.produced_at.replace(year=2030)})
    assert later.wire()[1] == msg_id
    assert later.wire()[0] != body


class Stream:
    """FERRY_DESIRED in memory: the last message per subject, expected-last-sequence enforced."""

    def __init__(self) -> None:
        self.sequence = 0
        self.last: dict[str, tuple[int, str, DesiredSet]] = {}
        self.reads = 0

    async def publish(self, subject: str, body: bytes, headers: dict[str, str]) -> Published:
        held = self.last.get(subject)
        if int(headers[EXPECTED_LAST_SUBJECT_SEQUENCE]) != (held[0] if held else 0):
            raise WrongLastSequence(f"wrong last sequence: {held[0] if held else 0}")
        self.sequence += 1
        self.last[subject] = (self.sequence, headers[MSG_ID_HEADER], DesiredSet.model_validate_json(body))
        return Published(self.sequence, duplicate=False)

    async def latest(self, desired: DesiredSet) -> StoredDesired:
        self.reads += 1
        held = self.last.get(desired.subject)
        if held is None:
            return StoredDesired()
        sequence, msg_id, stored = held
        return StoredDesired.of(stored, sequence, msg_id)


def on_stream(stream: Stream) -> Converter:
    return Converter(stream.publish, ConverterSettings(nats_url="nats://127.0.0.1:1"), stream.latest)


async def test_a_replica_publishes_after_what_it_stored_without_reading() -> None:
    stream = Stream()
    converter = on_stream(stream)
    for generation in (1, 2, 3):
        await converter.handle(booster_event(generation=generation))
    assert stream.reads == 0  # a new subject, then after its own messages: the server checks
    subject = desired_subject("modelboosters", "default", "test-model")
    assert stream.last[subject][0] == 3
    assert stream.last[subject][2].owner.generation == 3


async def test_a_message_of_another_replica_is_read_and_decided_on() -> None:
    stream = Stream()
    mine, other = on_stream(stream), on_stream(stream)
    subject = desired_subject("modelboosters", "default", "test-model")
    await mine.handle(booster_event(generation=1))
    await other.handle(booster_event(generation=3))  # reads: mine's message is not what it expected
    assert stream.reads == 1
    assert await mine.handle(booster_event(generation=2)) is None  # stale, decided on a read
    assert stream.reads == 2
    assert stream.last[subject][2].owner.generation == 3
    await mine.handle(booster_event(generation=4))  # after what it read: no read
    assert stream.reads == 2
    assert stream.last[subject][2].owner.generation == 4


async def test_unchanged_is_decided_on_a_fresh_read() -> None:
    """What a replica remembers says "already stored", but another replica stored something else
    since: the set is published again."""
    stream = Stream()
    mine, other = on_stream(stream), on_stream(stream)
    subject = desired_subject("modelboosters", "default", "test-model")
    first = booster_event(generation=1)
    await mine.handle(first)
    changed = booster_event(generation=1)
    changed.object["spec"]["backend"]["env"][0]["value"] = "https://obs.example.com"
    await other.handle(ObjectEvent.from_object("MODIFIED", Resource.MODEL_BOOSTERS, changed.object))
    before = stream.last[subject][0]
    await mine.handle(first)  # back to the first content
    sequence, _, stored = stream.last[subject]
    assert sequence == before + 1
    assert stored.msg_id == desired_set(first).msg_id
    await mine.handle(first)  # now it is the last message: unchanged, after a read
    assert stream.last[subject][0] == sequence


async def test_a_duplicate_id_is_decided_on_a_read() -> None:
    """The server deduplicates before it checks the expected sequence: content that comes back
    after a tombstone (A, deleted, A) under the id of its first publish is read and stored again."""
    stream = Stream()
    converter = on_stream(stream)
    ids: set[str] = set()
    publish = stream.publish

    async def deduplicating(subject: str, body: bytes, headers: dict[str, str]) -> Published:
        if headers[MSG_ID_HEADER] in ids:
            return Published(1, duplicate=True)
        ids.add(headers[MSG_ID_HEADER])
        return await publish(subject, body, headers)

    converter.publish = deduplicating
    subject = desired_subject("modelboosters", "default", "test-model")
    live = booster_event()
    await converter.handle(live)
    await converter.handle(booster_event(kind="DELETED"))
    assert stream.last[subject][2].deleted
    await converter.handle(live)
    assert not stream.last[subject][2].deleted
    assert stream.last[subject][0] == 3


class Queued:
    """Stands in for the work queue: what the service queued, with the trace context."""

    def __init__(self) -> None:
        self.added: list[tuple[tuple[str, str, str], Context | None]] = []

    def add(self, key: tuple[str, str, str], context: Context | None = None) -> None:
        self.added.append((key, context))


def view_driven() -> tuple[ConverterService, ObjectView, Queued]:
    """The service's change callback and resync on a view fed in memory (no bus, one replica)."""
    service = ConverterService(ConverterSettings(nats_url="nats://127.0.0.1:1"))
    view = owners_view(None)  # type: ignore[arg-type]  # never started: fed by apply()
    view.on_change(service._changed)
    service._view = view
    queued = Queued()
    service.queue = queued  # type: ignore[assignment]
    return service, view, queued


def test_a_status_write_queues_nothing_a_spec_change_and_a_relist_do() -> None:
    service, view, queued = view_driven()
    service._live = True
    key = (Resource.MODEL_BOOSTERS, "default", "test-model")
    first = booster_event()
    view.apply(first, {"traceparent": TRACEPARENT})
    assert [k for k, _ in queued.added] == [key]
    context = queued.added[0][1]
    assert context is not None
    assert f"{trace.get_current_span(context).get_span_context().trace_id:032x}" == TRACE_ID
    status_only = booster_event(kind="MODIFIED")
    status_only.object["status"] = {"conditions": [{"type": "Initialized", "status": "True"}]}
    status_only.object["metadata"]["resourceVersion"] = "99"
    view.apply(ObjectEvent.from_object("MODIFIED", Resource.MODEL_BOOSTERS, status_only.object))
    assert len(queued.added) == 1, "a status write was queued"
    view.apply(booster_event(kind="SYNC"))  # a relist: converted, desired sets may have been lost
    view.apply(booster_event(kind="MODIFIED", generation=2))
    assert [k for k, _ in queued.added] == [key, key, key]
    held = service._pending.take(key)
    assert held is not None
    assert held.generation == 2


def test_start_queues_what_the_snapshot_holds_and_its_tombstones() -> None:
    service, view, queued = view_driven()
    view.apply(booster_event())  # the snapshot: nothing queued yet
    gone = serving_event("gone")
    view.apply(gone)
    view.apply(ObjectEvent.from_object("DELETED", Resource.MODEL_SERVINGS, gone.object))
    assert queued.added == []
    service._live = True
    assert service.resync() == 2
    assert sorted(k for k, _ in queued.added) == [
        (Resource.MODEL_BOOSTERS, "default", "test-model"),
        (Resource.MODEL_SERVINGS, "default", "gone"),
    ]
    tombstone = service._pending.take((Resource.MODEL_SERVINGS, "default", "gone"))
    assert tombstone is not None
    assert tombstone.deleted


def test_an_owner_whose_status_lags_is_converted_at_start_in_its_last_changes_trace() -> None:
    service, view, queued = view_driven()
    view.apply(booster_event(), {"traceparent": TRACEPARENT})  # created while the converter started
    settled = serving_event("settled")
    settled.object["metadata"]["generation"] = 1
    settled.object["status"] = {"observedGeneration": 1}
    view.apply(settled, {"traceparent": TRACEPARENT})  # status caught up: history, not this start's
    service._live = True
    assert service.resync(contexts=service._start_traces.take()) == 2
    contexts = dict(queued.added)
    booster = contexts[(Resource.MODEL_BOOSTERS, "default", "test-model")]
    assert booster is not None
    assert f"{trace.get_current_span(booster).get_span_context().trace_id:032x}" == TRACE_ID
    assert contexts[(Resource.MODEL_SERVINGS, "default", "settled")] is None


def test_an_owner_created_again_during_the_snapshot_is_not_converted_as_its_tombstone() -> None:
    service, view, queued = view_driven()
    view.apply(booster_event(kind="DELETED"))
    view.apply(booster_event())
    service._live = True
    assert service.resync() == 1
    assert [k for k, _ in queued.added] == [(Resource.MODEL_BOOSTERS, "default", "test-model")]
    assert service._pending.take((Resource.MODEL_BOOSTERS, "default", "test-model")) is None  # the view's


class Live:
    """Stands in for the membership: these members are live (rendezvous hashing as the real one)."""

    def __init__(self, member_id: str, live: set[str]) -> None:
        self.member_id, self.live = member_id, frozenset(live)

    def owns(self, key: str) -> bool:
        return owner(key, self.live) == self.member_id


def test_a_departure_queues_only_the_owners_taken_over() -> None:
    service, view, queued = view_driven()
    names = [f"model-{i}" for i in range(40)]
    for name in names:
        event = booster_event()
        event.object["metadata"]["name"] = name
        view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, event.object))
    both = {"me", "other"}
    service._members = Live("me", both)  # type: ignore[assignment]
    service._live = True
    mine = {n for n in names if owner(f"{Resource.MODEL_BOOSTERS}/default/{n}", both) == "me"}
    assert service.resync() == len(mine)
    queued.added.clear()
    service._members = Live("me", {"me"})  # type: ignore[assignment]
    assert service.resync(frozenset(both)) == len(names) - len(mine)
    assert {k[2] for k, _ in queued.added} == set(names) - mine


def test_a_deletion_another_replica_did_not_convert_is_converted_by_the_one_taking_over() -> None:
    service, view, queued = view_driven()
    both = {"me", "other"}
    names = [f"model-{i}" for i in range(40)]
    theirs, kept = [n for n in names if owner(f"{Resource.MODEL_BOOSTERS}/default/{n}", both) == "other"][:2]
    service._members = Live("me", both)  # type: ignore[assignment]
    service._live = True
    for name in (theirs, kept):
        event = booster_event()
        event.object["metadata"]["name"] = name
        view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, event.object))
        view.apply(ObjectEvent.from_object("DELETED", Resource.MODEL_BOOSTERS, event.object))
    again = booster_event()
    again.object["metadata"]["name"] = kept
    view.apply(ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, again.object))  # created again
    assert queued.added == []  # the other replica's owners
    service._members = Live("me", {"me"})  # type: ignore[assignment]  # "other" went away
    service.resync(frozenset(both))
    assert {k[2] for k, _ in queued.added} == {theirs, kept}
    tombstone = service._pending.take((Resource.MODEL_BOOSTERS, "default", theirs))
    assert tombstone is not None
    assert tombstone.deleted
    assert service._pending.take((Resource.MODEL_BOOSTERS, "default", kept)) is None  # the view's owner


def test_others_deletions_are_kept_only_for_a_while() -> None:
    now = [0.0]
    kept = OthersDeletions(keep=45.0, clock=lambda: now[0])
    gone = booster_event(kind="DELETED")
    kept.heard((Resource.MODEL_BOOSTERS, "default", "a"), gone)
    now[0] = 30.0
    kept.heard((Resource.MODEL_BOOSTERS, "default", "b"), gone)
    now[0] = 50.0
    kept.heard((Resource.MODEL_BOOSTERS, "default", "c"), booster_event())  # not a deletion: not kept
    assert set(kept.take(lambda key: True)) == {(Resource.MODEL_BOOSTERS, "default", "b")}
    assert len(kept) == 0
