"""The converter service against a real nats-server with JetStream.

The service runs in this process (``ConverterService``, the same object ``ferry-converter``
runs) with its own durable prefix and a namespace filter, so it only sees this test's owners.
Covers: a booster and a ModelServing round-trip to FERRY_DESIRED with ``Nats-Msg-Id``; a
duplicated input and a conversion retried after its publish each leave ONE desired set in the
stream; an older generation never overwrites a newer desired set; a tombstone; the trace
continues; an undecodable message ends on the dead-letter stream at once; a burst of events for
one owner is converted as its newest event; the service as its own NATS user named by
``FERRY_NATS_USER``/``FERRY_NATS_PASSWORD`` (how deploy/ and the Helm chart run it) converts a booster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from ferry_schemas.bus import (
    DEAD_LETTER_STREAM,
    DESIRED_STREAM,
    MSG_ID_HEADER,
    OBJECTS_STREAM,
    DeadLetter,
    DesiredSet,
    ObjectEvent,
    Resource,
    dead_letter_subject,
)
from ferry_schemas.runtime.jetstream import declare_streams
from nats.aio.client import Client
from nats.js import JetStreamContext
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
        await self.js.publish(
            event.subject,
            event.to_bytes(),
            stream=OBJECTS_STREAM,
            headers={MSG_ID_HEADER: msg_id or event.msg_id, **(headers or {})},
        )

    async def desired(self, subject: str) -> tuple[int, DesiredSet, dict[str, str]] | None:
        try:
            raw = await self.js.get_last_msg(DESIRED_STREAM, subject)
        except NotFoundError:
            return None
        return raw.seq or 0, DesiredSet.model_validate_json(raw.data or b""), dict(raw.headers or {})

    async def drained(self, resource: str = Resource.MODEL_BOOSTERS) -> bool:
        """Every message delivered to the converter's consumer was acked."""
        info = await self.js.consumer_info(OBJECTS_STREAM, durable_name(self.service.settings, resource))
        return info.num_pending == 0 and info.num_ack_pending == 0


@contextlib.asynccontextmanager
async def running(admin_url: str, service_url: str) -> AsyncIterator[Bus]:
    """The converter service at ``service_url`` on a namespace of its own; ``admin_url`` inspects."""
    nc = await nats.connect(admin_url)
    js = nc.jetstream()
    await declare_streams(js)
    namespace = f"conv-{uuid.uuid4().hex[:8]}"
    settings = ConverterSettings(
        nats_url=service_url, durable_prefix=namespace, namespace=namespace, max_deliver=3, ack_wait=5.0
    )
    service = ConverterService(settings)
    assert await asyncio.wait_for(service.start(), 30)
    try:
        yield Bus(nc, js, namespace, service)
    finally:
        await service.stop()
        for resource in (Resource.MODEL_BOOSTERS, Resource.MODEL_SERVINGS):
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(OBJECTS_STREAM, durable_name(settings, resource))
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
    # The same object again under another message id (e.g. a relist), so the objects stream keeps it.
    await bus.publish(event, msg_id=f"{event.msg_id}/again")
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
    stats = await bus.js.consumer_info(
        OBJECTS_STREAM, durable_name(bus.service.settings, Resource.MODEL_BOOSTERS)
    )
    assert stats.delivered.stream_seq == stats.ack_floor.stream_seq  # acked once the retry succeeded


async def test_status_only_change_publishes_nothing_new(bus: Bus) -> None:
    """A new resourceVersion with the same spec (e.g. a status write) converts to the same content."""
    subject = f"ferry.desired.modelboosters.{bus.namespace}.test-model"
    event = bus.booster()
    await bus.publish(event)
    first_seq, _, _ = await eventually(lambda: bus.desired(subject))
    before = duplicates()
    event.object["metadata"]["resourceVersion"] = "77"
    event.object["status"] = {"conditions": [{"type": "Active", "status": "False"}]}
    changed = ObjectEvent.from_object("MODIFIED", Resource.MODEL_BOOSTERS, event.object)
    await bus.publish(changed)
    await eventually(lambda: asyncio.sleep(0, result=duplicates() == before + 1))
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


async def test_undecodable_message_becomes_a_dead_letter(bus: Bus) -> None:
    durable = durable_name(bus.service.settings, Resource.MODEL_BOOSTERS)
    letters = await bus.nc.subscribe(dead_letter_subject("converter", OBJECTS_STREAM, durable))
    subject = f"ferry.obj.modelboosters.{bus.namespace}.broken"
    await bus.js.publish(
        subject, b'{"type": "ADDED"}', stream=OBJECTS_STREAM, headers={MSG_ID_HEADER: "broken/1"}
    )
    msg = await letters.next_msg(timeout=30)
    letter = DeadLetter.model_validate_json(msg.data)
    assert letter.subject == subject
    assert letter.deliveries == 1  # it can never be decoded: no retries
    assert json.loads(letter.data) == {"type": "ADDED"}
    stored = await bus.js.get_last_msg(DEAD_LETTER_STREAM, msg.subject)
    assert stored.data == msg.data
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
