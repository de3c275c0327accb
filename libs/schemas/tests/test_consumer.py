"""The consumer's in-progress timer, with a stand-in message (the bus itself: tests/integration)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from ferry_schemas.runtime.consumer import InProgress
from ferry_schemas.runtime.jetstream import ack_position, num_pending
from nats.aio.msg import Msg


class Message:
    def __init__(self) -> None:
        self.beats = 0
        self.third = asyncio.Event()

    async def in_progress(self) -> None:
        self.beats += 1
        if self.beats >= 3:
            self.third.set()


async def test_in_progress_beats_until_cancelled() -> None:
    msg = Message()
    timer = InProgress(cast(Any, msg), 0.02)
    await asyncio.wait_for(msg.third.wait(), timeout=5.0)
    timer.cancel()
    beats = msg.beats
    await asyncio.sleep(0.1)
    assert msg.beats == beats  # nothing after the message was settled


async def test_a_message_settled_at_once_sends_no_beat() -> None:
    msg = Message()
    InProgress(cast(Any, msg), 0.05).cancel()
    await asyncio.sleep(0.15)
    assert msg.beats == 0


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.FERRY_OBJECTS.converter-modelboosters.1.4242.17.1700000000000000000.93",
        "$JS.ACK._.hash.FERRY_OBJECTS.converter-modelboosters.2.4242.17.1700000000000000000.93",
        "$JS.ACK.hub.hash.FERRY_OBJECTS.converter-modelboosters.2.4242.17.1700000000000000000.93.rAnDoM",
    ],
)
def test_num_pending_reads_what_the_metadata_says(reply: str) -> None:
    msg = Msg(cast(Any, None), subject="ferry.obj.pods.ns.p", reply=reply)
    assert num_pending(reply) == msg.metadata.num_pending == 93
    assert ack_position(reply) == (msg.metadata.sequence.stream, 93) == (4242, 93)


@pytest.mark.parametrize("reply", [None, "", "_INBOX.abc", "$JS.ACK.too.short", "$JS.ACK.S.C.1.2.3.4.x"])
def test_num_pending_of_what_is_no_ack_subject_is_none(reply: str | None) -> None:
    assert num_pending(reply) is None
    assert ack_position(reply) is None
