"""The consumer's in-progress timer, with a stand-in message (the bus itself: tests/integration)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from ferry_schemas.runtime.consumer import InProgress


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
