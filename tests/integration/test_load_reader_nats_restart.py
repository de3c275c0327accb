"""The router's load reader across a nats-server restart: the same reader process connects again,
creates its consumer again (ephemeral consumers do not survive a restart) and load published after
the restart reaches the routing table.

Real processes: nats-server (JetStream, the users of ``deploy/base/nats``), the load reader child
as the ``router`` user.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from ferry_local.natsd import NatsServer
from ferry_router.state.load_reader import LoadFeed
from ferry_router.state.pushed_load import PushedLoad
from ferry_router.state.table import RoutingTable
from ferry_schemas.load import EngineLoad
from ferry_schemas.runtime.jetstream import connect, declare_streams
from nats.js import JetStreamContext

from tests.conftest import local_nats_server
from tests.support.router_world import model_server, pod_object

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVED = "org/restart-model"


@pytest.fixture
def own_nats() -> Iterator[NatsServer]:
    """A nats-server of this test alone: it is stopped and started again on the same port and store."""
    with local_nats_server("load-reader-restart") as server:
        yield server


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_the_load_reader_follows_the_stream_again_after_nats_restarts(own_nats: NatsServer) -> None:
    nc = await connect(own_nats.url, "load-restart-test")
    js = nc.jetstream()
    await declare_streams(js)
    table = RoutingTable()
    table.apply_server("ns/srv", model_server("ns", "srv", {"app": "r"}, 8000, model=SERVED))
    table.apply_pod("ns/pod-0", pod_object("ns", "pod-0", {"app": "r"}, "127.0.0.2"))
    endpoint = table.endpoints["ns/pod-0"]
    feed = LoadFeed(own_nats.url_for("router"), stale_after=30.0, batch=0.05)
    pushed = PushedLoad(table, feed)
    seq = 0

    async def publish(js: JetStreamContext, waiting: float) -> None:
        nonlocal seq
        seq += 1
        load = EngineLoad(
            namespace="ns", pod="pod-0", model=SERVED, epoch="e1", seq=seq, sent_at=time.time(),
            waiting=waiting, models=[SERVED], base_models=[SERVED],
        )  # fmt: skip
        await js.publish(load.subject, load.to_bytes(), timeout=2)

    await pushed.start()
    try:
        await publish(js, 3.0)
        await until(lambda: endpoint.metrics.waiting == 3.0, "the pushed load")
        reader = feed.pid
        await nc.close()

        await asyncio.to_thread(own_nats.restart)  # the reader keeps running meanwhile

        nc = await connect(own_nats.url, "load-restart-test")
        js = nc.jetstream()
        await declare_streams(js)  # in memory: the restarted server may have lost it

        async def published_after_restart() -> bool:
            try:
                await publish(js, 7.0)
            except Exception:  # JetStream still starting
                return False
            return True

        deadline = time.monotonic() + 30
        while endpoint.metrics.waiting != 7.0:  # each round publishes again: one may come before the consumer
            assert time.monotonic() < deadline, "load published after the restart never reached the table"
            await published_after_restart()
            await asyncio.sleep(0.5)
        assert (feed.pid, feed.restarts) == (reader, 0)  # the same reader reconnected
        assert endpoint.metrics.source == "push"
    finally:
        await pushed.stop()
        await nc.close()
