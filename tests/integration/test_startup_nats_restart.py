"""Start-up's one-shot JetStream requests across a nats-server restart: they wait, the process lives.

A service starting while its nats-server restarts (a rollout of the NATS StatefulSet, the e2e fault
test) sends its first requests — declare the streams, bind a bucket, the first heartbeat — to a
server that is not there: each times out. They must be sent again once the server is back, not end
the process (which a Deployment would restart, but only after a crash-loop back-off).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable

import pytest
from ferry_local.natsd import NatsServer
from ferry_schemas.bus import STREAMS
from ferry_schemas.runtime.jetstream import connect, declare_streams
from ferry_schemas.runtime.members import Members
from nats.aio.client import Client

pytestmark = pytest.mark.integration
UNANSWERED_WITHIN = 30.0
"""Seconds for a request to the stopped server to end without an answer (nats-py's API timeout: 5)."""
DONE_WITHIN = 60.0
"""Seconds for the waiting start-up to finish once the server is back."""


async def across_a_restart(
    own_nats: NatsServer, startup: Awaitable[None], caplog: pytest.LogCaptureFixture
) -> None:
    """Stop the server, run ``startup`` until one of its requests went unanswered, start the
    server again: ``startup`` finishes."""
    own_nats.stop()
    task = asyncio.ensure_future(startup)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + UNANSWERED_WITHIN
    while not any("JetStream did not answer" in r.getMessage() for r in caplog.records):
        assert not task.done(), f"start-up ended while the server was down: {task.exception()!r}"
        assert loop.time() < deadline, "no request went unanswered while the server was down"
        await asyncio.sleep(0.05)
    await asyncio.to_thread(own_nats.start)
    await asyncio.wait_for(task, DONE_WITHIN)


@pytest.fixture
async def nc(own_nats: NatsServer, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Client]:
    """A client of ``own_nats``, with the start-up helpers' warnings captured."""
    caplog.set_level(logging.WARNING, logger="ferry_schemas.runtime.jetstream")
    client = await connect(own_nats.url, "startup-restart-test")
    yield client
    await client.close()


async def test_declaring_the_streams_waits_out_a_restart(
    own_nats: NatsServer, nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    await across_a_restart(own_nats, declare_streams(js), caplog)
    for spec in STREAMS:
        assert (await js.stream_info(spec.name)).config.subjects == spec.subjects


async def test_a_member_starts_across_a_restart(
    own_nats: NatsServer, nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    members = Members(js, "startup_members", "status-1", ttl=3.0, mark=b"v1")
    try:
        await across_a_restart(own_nats, members.start(), caplog)
        await asyncio.wait_for(members.wait_known(), DONE_WITHIN)
        assert members.live == frozenset({"status-1"})
        beat = await (await js.key_value("startup_members")).get(f"{members.scope}.status-1")
        assert beat.value == b"v1"  # the first heartbeat landed
    finally:
        await members.stop()
