"""The router's load reader (its own NATS client, ``state/load_wire.py``) on a nats-server of its
own: across a restart the same reader process connects again, creates its consumer again
(ephemeral consumers do not survive a restart) and load published after the restart reaches the
routing table; over TLS it connects as every Ferry service does (``tls://``, ``FERRY_NATS_CA``);
on a stream with nothing to deliver it keeps its one connection across the consumer's idle
heartbeats.

Real processes: nats-server (JetStream, the users of ``deploy/base/nats``), the load reader child
as the ``router`` user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from ferry_local.binaries import find_binaries
from ferry_local.natsd import NatsServer
from ferry_local.pki import ensure_pki
from ferry_router.state import load_wire
from ferry_router.state.load_reader import LoadFeed
from ferry_router.state.pushed_load import PushedLoad
from ferry_router.state.table import RoutingTable
from ferry_schemas.bus import LOAD_STREAM
from ferry_schemas.load import EngineLoad
from ferry_schemas.runtime.jetstream import connect, declare_streams
from nats.js import JetStreamContext

from tests.support.router_world import model_server, pod_object

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVED = "org/restart-model"


@dataclass
class TlsNatsServer(NatsServer):
    """nats-server that takes clients over TLS only (a certificate for 127.0.0.1 from ``ca``)."""

    cert: Path = Path()
    key: Path = Path()

    def config(self) -> str:
        tls = f"tls {{ cert_file: {json.dumps(str(self.cert))}, key_file: {json.dumps(str(self.key))} }}"
        return f"{super().config()}\n{tls}\n"


@pytest.fixture
def tls_nats(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TlsNatsServer]:
    directory = tmp_path
    pki = ensure_pki(directory / "pki")
    monkeypatch.setenv("FERRY_NATS_CA", str(pki.ca_crt))  # this test's clients and the reader child
    binary = find_binaries().nats_server
    store, logs = directory / "store", directory / "logs"
    server = TlsNatsServer(binary, store, logs, cert=pki.server_crt, key=pki.server_key)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pushed_table() -> tuple[RoutingTable, str]:
    table = RoutingTable()
    table.apply_server("ns/srv", model_server("ns", "srv", {"app": "r"}, 8000, model=SERVED))
    table.apply_pod("ns/pod-0", pod_object("ns", "pod-0", {"app": "r"}, "127.0.0.2"))
    return table, "ns/pod-0"


class Sidecar:
    """Publishes ``pod-0``'s load as its runtime sidecar would."""

    def __init__(self) -> None:
        self.seq = 0

    async def publish(self, js: JetStreamContext, waiting: float) -> None:
        self.seq += 1
        load = EngineLoad(
            namespace="ns", pod="pod-0", model=SERVED, epoch="e1", seq=self.seq, sent_at=time.time(),
            waiting=waiting, models=[SERVED], base_models=[SERVED],
        )  # fmt: skip
        await js.publish(load.subject, load.to_bytes(), timeout=2)


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_the_load_reader_follows_the_stream_again_after_nats_restarts(own_nats: NatsServer) -> None:
    nc = await connect(own_nats.url, "load-restart-test")
    js = nc.jetstream()
    await declare_streams(js)
    table, key = pushed_table()
    endpoint = table.endpoints[key]
    feed = LoadFeed(own_nats.url_for("router"), stale_after=30.0, batch=0.05)
    pushed = PushedLoad(table, feed)
    sidecar = Sidecar()

    await pushed.start()
    try:
        await sidecar.publish(js, 3.0)
        await until(lambda: endpoint.metrics.waiting == 3.0, "the pushed load")
        reader = feed.pid
        await nc.close()

        await asyncio.to_thread(own_nats.restart)  # the reader keeps running meanwhile

        nc = await connect(own_nats.url, "load-restart-test")
        js = nc.jetstream()
        await declare_streams(js)  # in memory: the restarted server may have lost it

        async def published_after_restart() -> bool:
            try:
                await sidecar.publish(js, 7.0)
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


async def test_the_load_reader_connects_over_tls_as_every_service(tls_nats: TlsNatsServer) -> None:
    nc = await connect(tls_nats.url.replace("nats://", "tls://"), "load-tls-test")
    try:
        js = nc.jetstream()
        await declare_streams(js)
        table, key = pushed_table()
        feed = LoadFeed(tls_nats.url_for("router").replace("nats://", "tls://"), stale_after=30.0, batch=0.05)
        pushed = PushedLoad(table, feed)
        await pushed.start()
        try:
            await Sidecar().publish(js, 4.0)
            await until(lambda: table.endpoints[key].metrics.waiting == 4.0, "load read over TLS")
        finally:
            await pushed.stop()
    finally:
        await nc.close()


async def test_idle_heartbeats_on_an_empty_stream_keep_the_one_connection(
    own_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-server 2.9 writes an idle heartbeat's missing reply subject as an empty field; read as a
    flow-control request, it was answered with a PUB to no subject, and the server closed the
    connection at every heartbeat (a new connection and consumer every 5.5 s until load flowed)."""
    monkeypatch.setattr(load_wire, "IDLE_HEARTBEAT", 0.2)  # this process's reader: heartbeats 5 a second
    nc = await connect(own_nats.url, "load-heartbeat-test")
    try:
        await declare_streams(nc.jetstream())  # FERRY_LOAD, empty: the consumer has only heartbeats to send
    finally:
        await nc.close()
    name = "load-heartbeat-reader"
    subscription = load_wire.LoadSubscription(
        own_nats.url_for("router"), LOAD_STREAM, "ferry.load.>", lambda payload: None, name
    )
    reading = asyncio.create_task(subscription.run())
    try:
        async with httpx.AsyncClient(base_url=own_nats.monitor) as monitor:

            async def readers() -> list[dict[str, object]]:
                connz = (await monitor.get("/connz", params={"limit": 1000})).json()
                return [c for c in connz.get("connections") or [] if c.get("name") == name]

            deadline = time.monotonic() + 30
            while not (found := await readers()) or int(str(found[0]["out_msgs"])) < 6:
                assert time.monotonic() < deadline, f"reader: {found}, {subscription.sessions} sessions"
                await asyncio.sleep(0.05)
        # the consumer's answer and at least five heartbeats on one connection, never a second one
        assert subscription.sessions == 1
        assert len(found) == 1
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
