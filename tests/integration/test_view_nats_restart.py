"""The bus-fed object view across a nats-server restart: it keeps following ``FERRY_OBJECTS``.

A view's ordered consumers are ephemeral (in memory on the server), so a restarted nats-server has
none of them; the view must notice and follow again from where it stopped, seeing every object
changed after the restart — what the applier and the status service read to reconcile.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ferry_local.natsd import NatsServer
from ferry_schemas.bus import OBJECTS_STREAM, ObjectEvent, Resource
from ferry_schemas.runtime.jetstream import connect, declare_streams
from ferry_schemas.runtime.view import ObjectView
from nats.js import JetStreamContext

pytestmark = pytest.mark.integration
OBJECTS = 40
SEEN_WITHIN = 5.0
"""Seconds for a change made after the restart to reach the view: what the applier and the status
service wait for a trigger (nats-py alone notices a lost ordered consumer only after two missed idle
heartbeats, 10 to 20 s)."""
PUBLISH_WITHIN = 30.0
"""Seconds for the restarted server to take a message again."""


def pod(name: str, version: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
            "labels": {"version": str(version)},
        },
    }


async def publish(js: JetStreamContext, name: str, version: int) -> int:
    event = ObjectEvent.from_object("MODIFIED", Resource.PODS, pod(name, version))
    ack = await js.publish(event.subject, event.to_bytes())
    return int(ack.seq)


async def publish_until_acked(js: JetStreamContext, name: str, version: int) -> int:
    """Publish while the restarted server may still be starting JetStream."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PUBLISH_WITHIN
    while True:
        try:
            return await publish(js, name, version)
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


def version_in(view: ObjectView, name: str) -> int:
    obj = view.get(Resource.PODS, "ns", name) or {}
    return int(((obj.get("metadata") or {}).get("labels") or {}).get("version", 0))


async def test_a_view_sees_changes_made_after_nats_restarts(own_nats: NatsServer) -> None:
    nc = await connect(own_nats.url, "view-restart-test")
    js = nc.jetstream()
    await declare_streams(js)
    view = ObjectView(js, [Resource.PODS, Resource.SERVICES])
    try:
        for i in range(OBJECTS):
            await publish(js, f"p{i}", 1)
        await view.start()
        await asyncio.wait_for(view.wait_synced(), 10)
        assert await view.wait_until(lambda: version_in(view, f"p{OBJECTS - 1}") == 1, 10)
        for i in range(OBJECTS // 2):  # the view follows changes, not only the snapshot
            await publish(js, f"p{i}", 2)
        assert await view.wait_until(lambda: version_in(view, f"p{OBJECTS // 2 - 1}") == 2, 10)

        # a reader that gave up waiting for the next message is called back once the view holds it
        next_sequence = int((await js.stream_info(OBJECTS_STREAM)).state.last_seq) + 1
        held = asyncio.Event()
        view.when_holds(Resource.PODS, next_sequence, held.set)
        await asyncio.sleep(0)
        assert not held.is_set(), "called back before the message exists"

        await asyncio.to_thread(own_nats.restart)  # the same port and store

        changed = [f"p{i}" for i in range(0, OBJECTS, 3)]
        last = 0
        for name in changed:
            last = await publish_until_acked(js, name, 3)
        caught_up = await view.wait_for(Resource.PODS, last, SEEN_WITHIN)
        assert caught_up, f"the view saw up to {view.seen(Resource.PODS)}, not {last}, after the restart"
        missing = [name for name in changed if version_in(view, name) != 3]
        assert not missing, f"changes after the restart missing from the view: {missing}"
        await asyncio.wait_for(held.wait(), 1.0)  # when_holds called back: the view holds the message
    finally:
        await view.stop()
        await nc.close()
