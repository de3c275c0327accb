"""The sidecar process: one NATS connection, probes on ``--port``, and its publishers.

A publisher is anything with a ``name``, a ``connected`` flag and ``async run(stop)``: the
KV-event bridge and the engine-load publisher. Each runs as its own task; one failing is
logged and restarted after a pause, without stopping the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from ferry_schemas.runtime import ProbeServer
from ferry_schemas.runtime.jetstream import connect

from ferry_runtime.kv_bridge import KvEventBridge
from ferry_runtime.load_publisher import LoadPublisher
from ferry_runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)


class Publisher(Protocol):
    name: str
    connected: bool

    async def run(self, stop: asyncio.Event) -> None: ...


async def _keep_running(publisher: Publisher, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await publisher.run(stop)
        except Exception:
            log.exception("publisher %s failed; restarting", publisher.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def run(settings: RuntimeSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, f"ferry-runtime-{settings.namespace}-{settings.pod}")
    js = nc.jetstream()
    publishers: list[Publisher] = [KvEventBridge(settings, js), LoadPublisher(settings, nc)]
    probes = ProbeServer(
        settings.host, settings.port, ready=lambda: nc.is_connected and all(p.connected for p in publishers)
    )
    await probes.start()
    log.info("runtime sidecar of %s/%s (model %s) up", settings.namespace, settings.pod, settings.model)
    tasks = [asyncio.create_task(_keep_running(p, stop), name=p.name) for p in publishers]
    try:
        await stop.wait()
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)
        await probes.stop()
        await nc.drain()
