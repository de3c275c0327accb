"""The converter service against a real nats-server with JetStream.

The service runs in this process (``ConverterService``, the same object ``ferry-converter``
runs) with a namespace filter, so its view only sees this test's owners. Covers: a booster and a
ModelServing round-trip to FERRY_DESIRED with ``Nats-Msg-Id``; a duplicated input and a conversion
retried after its publish each leave ONE desired set in the stream; a status-only change is not
even converted; an older generation never overwrites a newer desired set; a tombstone; the trace
continues; an undecodable message is skipped and the next one converted; a burst of events for one
owner is converted as its newest event; a change made while no converter ran, and a deletion, are
converted once one starts, which deletes the durable consumers an earlier converter read; two
replicas split the owners; the service as its own NATS user named by
``FERRY_NATS_USER``/``FERRY_NATS_PASSWORD`` (how deploy/ and the Helm chart run it) converts a booster.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from ferry_converter.latest import StoredDesired
from ferry_converter.metrics import CONVERSIONS, PUBLISH_DUPLICATES
from ferry_converter.service import Converter, ConverterService, durable_name, jetstream_publisher
from ferry_converter.settings import ConverterSettings
from ferry_local.natsd import NatsServer
from ferry_local.paths import shared_dir
from ferry_schemas.bus import DESIRED_STREAM, MSG_ID_HEADER, OBJECTS_STREAM, DesiredSet, ObjectEvent, Resource
from ferry_schemas.runtime.jetstream import declare_streams
from ferry_schemas.runtime.view import VIEW_BAD_EVENTS
from ferry_schemas.runtime.workqueue import ADDS
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError
from opentelemetry import propagate
from opentelemetry.context import Context

pytestmark = [pytest.mark.integration]

INPUT = shared_dir() / "reference" / "kthena" / "head" / "convert-testdata" / "input"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def duplicates() -> float:
    """Inputs whose desired set was already stored: skipped as unchanged or deduplicated by the server."""
    unchanged = CONVERSIONS.labels(Resource.MODEL_BOOSTERS, "unchanged")._value.get()
    deduplicated = PUBLISH_DUPLICATES.labels(Resource.MODEL_BOOSTERS)._value.get()
    return float(unchanged + deduplicated)


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy (bounded in time)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.1)


class Bus:
    def __init__(self, nc: Client, js: JetStreamContext, namespace: str, service: ConverterService) -> None:
        self.nc, self.js, self.namespace, self.service = nc, js, namespace, service
        self.published = 0
        """The stream sequence of the last object event this test published."""

    def booster(
        self, path: Path = INPUT / "model.yaml", generation: int = 1, kind: str = "ADDED"
    ) -> ObjectEvent:
        obj: dict[str, Any] = yaml.safe_load(path.read_text())
        obj["metadata"].update(
            namespace=self.namespace,
            uid=f"uid-{self.namespace}",
            generation=generation,
            resourceVersion=str(generation),
        )
        return ObjectEvent.from_object(kind, Resource.MODEL_BOOSTERS, obj)  # type: ignore[arg-type]

    async def publish(
        self, event: ObjectEvent, msg_id: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        ack = await self.js.publish(
            event.subject,
            event.to_bytes(),
            stream=OBJECTS_STREAM,
            headers={MSG_ID_HEADER: msg_id or event.msg_id, **(headers or {})},
        )
        self.published = max(self.published, ack.seq)

    async def desired(self, subject: str) -> tuple[int, DesiredSet, dict[str, str]] | None:
        try:
            raw = await self.js.get_last_msg(DESIRED_STREAM, subject)
        except NotFoundError:
            return None
        return raw.seq or 0, DesiredSet.model_validate_json(raw.data or b""), dict(raw.headers or {})

    async def drained(self, resource: str = Resource.MODEL_BOOSTERS) -> bool:
        """The converter's view applied every event published here, and no conversion is queued."""
        view = self.service._view
        return view is not None and view.seen(resource) >= self.published and len(self.service.queue) == 0


def settings_for(url: str, namespace: str) -> ConverterSettings:
    return ConverterSettings(nats_url=url, durable_prefix=namespace, namespace=namespace)


@contextlib.asynccontextmanager
async def running(admin_url: str, service_url: str, namespace: str | None = None) -> AsyncIterator[Bus]:
    """The converter service at ``service_url`` on a namespace of its own; ``admin_url`` inspects."""
    nc = await nats.connect(admin_url)
    js = nc.jetstream()
    await declare_streams(js)
    namespace = namespace or f"conv-{uuid.uuid4().hex[:8]}"
    service = ConverterService(settings_for(service_url, namespace))
    assert await asyncio.wait_for(service.start(), 30)
    try:
        yield Bus(nc, js, namespace, service)
    finally:
        await service.stop()
        await nc.drain()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with running(nats_url, nats_url) as bus:
        yield bus


async def test_runs_as_the_converter_user_named_by_the_environment(
    nats_server: NatsServer | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/ and the chart name the user in ``FERRY_NATS_USER``/``FERRY_NATS_PASSWORD``, not in the
    URL (under FastStream that shape crash-looped the converter while every test passed)."""
    assert nats_server is not None, "the suite's nats-server must run with the service users"
    monkeypatch.setenv("FERRY_NATS_USER", "converter")
    monkeypatch.setenv("FERRY_NATS_PASSWORD", nats_server.passwords["converter"])
    # no user in the service's URL: the environment names it
    async with running(nats_server.url, nats_server.plain_url) as bus:
        await bus.publish(bus.booster())
        await eventually(lambda: bus.desired(f"ferry.desired.modelboosters.{bus.namespace}.test-model"))


async def test_booster_round_trip(bus: Bus) -> None:
    event = bus.booster()
    await bus.publish(event)
    subject = f"ferry.desired.modelboosters.{bus.namespace}.test-model"
    seq, desired, headers = await eventually(lambda: bus.desired(subject))
    assert seq > 0
    assert headers[MSG_ID_HEADER] == f"{desired.msg_id}/0"  # the first message on its subject
    assert desired.owner.generation == 1
    assert sorted(c["kind"] for c in desired.children) == ["ModelRoute", "ModelServer", "ModelServing"]
    assert all(c["metadata"]["namespace"] == bus.namespace for c in desired.children)


async def test_modelserving_round_trip(bus: Bus) -> None:
    obj = {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelServing",
        "metadata": {
            "name": "ms",
            "namespace": bus.namespace,
            "uid": "ms-uid",
            "generation": 3,
            "resourceVersion": "9",
        },
        "spec": {
            "replicas": 2,
            "schedulerName": "volcano",
            "template": {
                "roles": [
                    {
                        "name": "leader",
                        "replicas": 1,
                        "workerReplicas": 1,
                        "entryTemplate": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                        "workerTemplate": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                    }
                ]
            },
        },
    }
    await bus.publish(ObjectEvent.from_object("ADDED", Resource.MODEL_SERVINGS, obj))
    _, desired, _ = await eventually(lambda: bus.desired(f"ferry.desired.modelservings.{bus.namespace}.ms"))
    assert desired.workload is not None
    assert desired.workload.replicas == 2
    assert desired.owner.generation == 3


async def test_duplicated_input_gives_one_desired_set(bus: Bus) -> None:
    subject = f"ferry.desired.modelboosters.{bus.namespace}.test-model"
    event = bus.booster()
    await bus.publish(event)
    first_seq, first, _ = await eventually(lambda: bus.desired(subject))
    before = duplicates()
    # The same object again from a relist (a SYNC event is converted even when nothing changed: it
    # may follow lost streams), under another message id, so the objects stream keeps it.
    relisted = ObjectEvent.from_object("SYNC", Resource.MODEL_BOOSTERS, event.object)
    await bus.publish(relisted, msg_id=f"{event.msg_id}/again")
    await eventually(bus.drained)
    seq, again, _ = await eventually(lambda: bus.desired(subject))
    assert seq == first_seq, "the duplicated input was stored as a second desired set"
    assert duplicates() == before + 1
    assert again.msg_id == first.msg_id


async def test_content_that_comes_back_is_stored_again(bus: Bus) -> None:
    """A, B, A within the duplicate window: the last A must not be dropped as a duplicate of the first.

    (E.g. a watcher's relist publishes a spurious tombstone, then the object is seen again.)
    """
    subject = f"ferry.desired.modelboosters.{bus.namespace}.test-model"
    live = bus.booster()
    await bus.publish(live)
    _, first, _ = await eventually(lambda: bus.desired(subject))
    await bus.publish(bus.booster(kind="DELETED"))

    async def deleted() -> bool:
        found = await bus.desired(subject)
        return found is not None and found[1].deleted

    await eventually(deleted)
    await bus.publish(live, msg_id=f"{live.msg_id}/seen-again")

    async def live_again() -> DesiredSet | None:
        found = await bus.desired(subject)
        return found[1] if found is not None and not found[1].deleted else None

    again = await eventually(live_again)
    assert again.msg_id == first.msg_id


async def test_retried_conversion_gives_one_desired_set(bus: Bus) -> None:
    """The first attempt publishes, then fails before the ack; the retry stores nothing new."""
    converter = bus.service.converter
    assert converter is not None
    calls = 0
    original = converter.handle

    async def fail_once_after_publishing(
        event: ObjectEvent, context: Context | None = None
    ) -> DesiredSet | None:
        nonlocal calls
        calls += 1
        result = await original(event, context)
        if calls == 1:
            raise RuntimeError("crash between publish and ack")
        return result

    converter.handle = fail_once_after_publishing  # type: ignore[method-assign]
    before = duplicates()
    await bus.publish(bus.booster())
    await eventually(lambda: asyncio.sleep(0, result=calls >= 2))
    await eventually(bus.drained)
    assert calls == 2
    assert duplicates() == before + 1, "the retry stored a second desired set"


async def test_status_only_change_is_not_converted(bus: Bus) -> None:
    """A new resourceVersion with the same spec (a status write) is not even queued: the view keeps
    no status, so the owner it holds did not change."""
    subject = f"ferry.desired.modelboosters.{bus.namespace}.test-model"
    event = bus.booster()
    await bus.publish(event)
    first_seq, _, _ = await eventually(lambda: bus.desired(subject))
    await eventually(bus.drained)
    adds = ADDS.labels("converter")._value.get()
    event.object["metadata"]["resourceVersion"] = "77"
    event.object["status"] = {"conditions": [{"type": "Active", "status": "False"}]}
    changed = ObjectEvent.from_object("MODIFIED", Resource.MODEL_BOOSTERS, event.object)
    await bus.publish(changed)
    await eventually(bus.drained)
    assert ADDS.labels("converter")._value.get() == adds
    seq, _, _ = await eventually(lambda: bus.desired(subject))
    assert seq == first_seq


async def test_older_generation_never_overwrites_a_newer_one(bus: Bus) -> None:
    subject = f"ferry.desired.modelboosters.{bus.namespace}.test-model"
    await bus.publish(bus.booster(generation=2))
    _, desired, _ = await eventually(lambda: bus.desired(subject))
    assert desired.owner.generation == 2
    await bus.publish(bus.booster(generation=1))
    await eventually(bus.drained)
    _, desired, _ = await eventually(lambda: bus.desired(subject))
    assert desired.owner.generation == 2


async def test_tombstone(bus: Bus) -> None:
    subject = f"ferry.desired.modelboosters.{bus.namespace}.test-model"
    await bus.publish(bus.booster())
    await eventually(lambda: bus.desired(subject))
    await bus.publish(bus.booster(kind="DELETED"))

    async def tombstone() -> bool:
        found = await bus.desired(subject)
        return found is not None and found[1].deleted

    await eventually(tombstone)


async def test_trace_continues(bus: Bus) -> None:
    subject = f"ferry.desired.modelboosters.{bus.namespace}.test-model"
    await bus.publish(bus.booster(), headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"})
    _, _, headers = await eventually(lambda: bus.desired(subject))
    context = propagate.extract(headers)
    assert headers["traceparent"].split("-")[1] == TRACE_ID
    assert context


async def test_undecodable_message_is_skipped(bus: Bus) -> None:
    """No dead letter without a durable consumer: the view counts and logs it, and goes on."""
    bad = VIEW_BAD_EVENTS.labels(Resource.MODEL_BOOSTERS)._value.get()
    subject = f"ferry.obj.modelboosters.{bus.namespace}.broken"
    ack = await bus.js.publish(
        subject, b'{"type": "ADDED"}', stream=OBJECTS_STREAM, headers={MSG_ID_HEADER: "broken/1"}
    )
    bus.published = ack.seq
    await bus.publish(bus.booster())
    await eventually(lambda: bus.desired(f"ferry.desired.modelboosters.{bus.namespace}.test-model"))
    assert VIEW_BAD_EVENTS.labels(Resource.MODEL_BOOSTERS)._value.get() == bad + 1
    assert await bus.desired(f"ferry.desired.modelboosters.{bus.namespace}.broken") is None


async def test_a_racing_replica_cannot_reorder_generations(bus: Bus) -> None:
    """A replica that read the subject before another replica published is rejected by the server."""
    subject = f"ferry.desired.modelboosters.{bus.namespace}.test-model"
    await bus.publish(bus.booster(generation=3))
    seq, _, _ = await eventually(lambda: bus.desired(subject))

    async def read_before_the_other_replica_published(desired: DesiredSet) -> StoredDesired:
        return StoredDesired()  # "no message yet": what a replica saw just before generation 3 landed

    racer = Converter(
        jetstream_publisher(bus.js), bus.service.settings, read_before_the_other_replica_published
    )
    with pytest.raises(Exception, match="wrong last sequence"):
        await racer.handle(bus.booster(generation=2))
    after, desired, _ = await eventually(lambda: bus.desired(subject))
    assert (after, desired.owner.generation) == (seq, 3)


async def test_stale_events_and_skips_are_counted(bus: Bus) -> None:
    stale = CONVERSIONS.labels(Resource.MODEL_BOOSTERS, "stale")._value.get()
    subject = f"ferry.desired.modelboosters.{bus.namespace}.test-model"
    await bus.publish(bus.booster(generation=5))
    await eventually(lambda: bus.desired(subject))
    await bus.publish(bus.booster(generation=4))
    await eventually(
        lambda: asyncio.sleep(
            0, result=CONVERSIONS.labels(Resource.MODEL_BOOSTERS, "stale")._value.get() == stale + 1
        )
    )


async def test_a_burst_for_one_owner_is_converted_as_its_newest_event(bus: Bus) -> None:
    """Events queued behind a conversion coalesce: the generations stored only go forward, end at
    the newest, and every message is acked."""
    subject = f"ferry.desired.modelboosters.{bus.namespace}.test-model"
    stored: list[int] = []

    async def on_desired(msg: Any) -> None:
        stored.append(DesiredSet.model_validate_json(msg.data).owner.generation)

    watch = await bus.nc.subscribe(subject, cb=on_desired)
    for generation in range(1, 11):
        await bus.publish(bus.booster(generation=generation))
    await eventually(bus.drained)
    await eventually(lambda: asyncio.sleep(0, result=stored and stored[-1] == 10))
    await watch.unsubscribe()
    assert stored == sorted(set(stored)), f"an older generation was stored after a newer one: {stored}"


async def test_what_changed_while_no_converter_ran_is_converted_at_start(nats_url: str) -> None:
    """The view's snapshot is the converter's input: a booster created and a ModelServing deleted
    while no converter ran are converted once one starts, and the durable consumers an earlier
    converter read are deleted."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await declare_streams(js)
    namespace = f"conv-{uuid.uuid4().hex[:8]}"
    settings = settings_for(nats_url, namespace)
    retired = durable_name(settings, Resource.MODEL_BOOSTERS)
    await js.add_consumer(OBJECTS_STREAM, ConsumerConfig(durable_name=retired, ack_policy=AckPolicy.EXPLICIT))
    offline = Bus(nc, js, namespace, ConverterService(settings))
    serving = ObjectEvent.from_object("ADDED", Resource.MODEL_SERVINGS, {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1", "kind": "ModelServing",
        "metadata": {"name": "gone", "namespace": namespace, "uid": "gone-uid", "generation": 1},
        "spec": {"replicas": 1, "template": {"roles": [{"name": "r", "replicas": 1, "entryTemplate": {}}]}},
    })  # fmt: skip
    await offline.publish(serving)
    await offline.publish(ObjectEvent.from_object("DELETED", Resource.MODEL_SERVINGS, serving.object))
    await offline.publish(offline.booster())
    await nc.drain()
    async with running(nats_url, nats_url, namespace) as bus:
        await eventually(lambda: bus.desired(f"ferry.desired.modelboosters.{namespace}.test-model"))

        async def tombstone() -> bool:
            found = await bus.desired(f"ferry.desired.modelservings.{namespace}.gone")
            return found is not None and found[1].deleted

        await eventually(tombstone)
        with pytest.raises(NotFoundError):
            await bus.js.consumer_info(OBJECTS_STREAM, retired)


async def test_two_replicas_split_the_owners(nats_url: str) -> None:
    """Each owner is converted by the one replica rendezvous hashing names, and each is stored once."""
    namespace = f"conv-{uuid.uuid4().hex[:8]}"
    async with running(nats_url, nats_url, namespace) as one, running(nats_url, nats_url, namespace) as two:
        members = [one.service._members, two.service._members]
        await eventually(
            lambda: asyncio.sleep(0, result=all(m is not None and len(m.live) == 2 for m in members))
        )
        converted: dict[int, list[str]] = {0: [], 1: []}
        for index, bus in enumerate((one, two)):
            converter = bus.service.converter
            assert converter is not None
            original = converter.handle

            async def counted(
                event: ObjectEvent,
                context: Context | None = None,
                i: int = index,
                original: Any = original,
            ) -> DesiredSet | None:
                converted[i].append(event.name)
                return await original(event, context)

            converter.handle = counted  # type: ignore[method-assign]
        names = [f"model-{i}" for i in range(16)]  # all on one replica: 2 in 65,536
        for name in names:
            event = one.booster()
            event.object["metadata"].update(name=name, uid=f"uid-{name}")
            await one.publish(ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, event.object))
        for name in names:
            await eventually(lambda name=name: one.desired(f"ferry.desired.modelboosters.{namespace}.{name}"))
        assert sorted(converted[0] + converted[1]) == sorted(names), "an owner was converted by both replicas"
        assert converted[0]
        assert converted[1]
