"""EventPublisher's ack handling: confirmed by a callback and a timer, resent in order when an ack
fails or never comes. The stream is a stand-in that answers each publish as the test says (what a
unit test of the publisher needs; tests/integration/test_watcher.py runs it against nats-server)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ferry_schemas.bus import ObjectEvent
from ferry_watcher.publisher import EventPublisher
from nats.js.api import PubAck
from nats.js.errors import APIError


def pod(name: str, version: int) -> ObjectEvent:
    return ObjectEvent.from_object(
        "MODIFIED",
        "pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": f"uid-{name}",
                "resourceVersion": str(version),
            },
        },
    )


class Stream:
    """Records every publish; each ``publish_async`` returns a future the test settles (or not)."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[PubAck]] = []
        self.sent: list[str] = []
        self.resent: list[str] = []

    async def publish_async(self, subject: str, payload: bytes, **_: Any) -> asyncio.Future[PubAck]:
        self.sent.append(subject)
        ack: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    async def publish(self, subject: str, payload: bytes, **_: Any) -> PubAck:
        self.resent.append(subject)
        return PubAck(stream="FERRY_OBJECTS", seq=len(self.resent))


def publisher(stream: Stream, timeout: float = 5.0) -> EventPublisher:
    return EventPublisher(stream, publish_timeout=timeout)  # type: ignore[arg-type]


async def test_flush_waits_for_every_ack() -> None:
    stream = Stream()
    events = publisher(stream)
    await events.publish(pod("a", 1))
    await events.publish(pod("b", 2))
    flushed = asyncio.create_task(events.flush())
    await asyncio.sleep(0)
    stream.acks[0].set_result(PubAck(stream="FERRY_OBJECTS", seq=1))
    await asyncio.sleep(0)
    assert not flushed.done()
    stream.acks[1].set_result(PubAck(stream="FERRY_OBJECTS", seq=2))
    await asyncio.wait_for(flushed, 1.0)
    assert stream.resent == []


async def test_an_ack_that_never_comes_is_resent_after_the_timeout() -> None:
    stream = Stream()
    events = publisher(stream, timeout=0.05)
    event = pod("a", 1)
    await events.publish(event)
    await asyncio.wait_for(events.flush(), 5.0)
    assert stream.acks[0].cancelled()  # nats-py forgets the reply
    assert stream.resent == [event.subject]


async def test_a_refused_publish_is_resent() -> None:
    stream = Stream()
    events = publisher(stream)
    event = pod("a", 1)
    await events.publish(event)
    stream.acks[0].set_exception(APIError(code=503, description="JetStream unavailable"))
    await asyncio.wait_for(events.flush(), 5.0)
    assert stream.resent == [event.subject]


async def test_a_failed_publish_superseded_by_a_later_one_of_its_object_is_not_resent() -> None:
    stream = Stream()
    events = publisher(stream)
    await events.publish(pod("a", 1))
    await events.publish(pod("a", 2))
    stream.acks[0].set_exception(APIError(code=503, description="JetStream unavailable"))
    stream.acks[1].set_result(PubAck(stream="FERRY_OBJECTS", seq=2))
    await asyncio.wait_for(events.flush(), 5.0)
    assert stream.resent == []


async def test_the_window_bounds_what_is_in_flight() -> None:
    stream = Stream()
    events = EventPublisher(stream, window=1)  # type: ignore[arg-type]
    await events.publish(pod("a", 1))
    second = asyncio.create_task(events.publish(pod("b", 1)))
    await asyncio.sleep(0.01)
    assert not second.done()  # waits for a slot
    stream.acks[0].set_result(PubAck(stream="FERRY_OBJECTS", seq=1))
    await asyncio.wait_for(second, 1.0)
    stream.acks[1].set_result(PubAck(stream="FERRY_OBJECTS", seq=2))
    await asyncio.wait_for(events.flush(), 1.0)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resends wait out a backoff (0.2 s first); the tests need not."""

    async def at_once(self: object) -> None:
        return None

    monkeypatch.setattr("ferry_watcher.backoff.Backoff.sleep", at_once)
