"""The watcher process: declare streams and buckets, run one informer per resource, serve probes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ferry_schemas.bus import Resource
from ferry_schemas.runtime import ProbeServer, kubeconn
from ferry_schemas.runtime.jetstream import connect, declare_streams
from ferry_schemas.runtime.lifecycle import serve
from ferry_schemas.runtime.tasks import cancel_all
from nats.aio.client import Client
from nats.js import JetStreamContext

from ferry_watcher.backoff import Backoff
from ferry_watcher.credentials import CredentialInformer
from ferry_watcher.informer import Informer
from ferry_watcher.pods import PodInformer, PodSelection
from ferry_watcher.publisher import EventPublisher
from ferry_watcher.resources import watched_resources
from ferry_watcher.settings import WatcherSettings

log = logging.getLogger(__name__)
FLUSH_ON_STOP = 5.0
"""Seconds a stopping watcher waits for the acks of what it sent."""


async def declare_bus(js: JetStreamContext) -> None:
    """The watcher owns the declaration of every stream (the others only bind). KV buckets belong
    to the service that uses them, which creates its own; the watcher's NATS user cannot touch them."""
    await declare_streams(js)


async def _connect_and_declare(settings: WatcherSettings) -> tuple[Client, JetStreamContext]:
    backoff = Backoff(maximum=5.0)
    while True:
        try:
            nc = await connect(settings.nats_url, settings.service)
            js = nc.jetstream()
            await declare_bus(js)
            return nc, js
        except Exception as exc:
            log.warning("NATS at %s not usable yet (%s); retrying", settings.nats_url, exc)
            await backoff.sleep()


async def run(settings: WatcherSettings, stop: asyncio.Event) -> None:
    nc, js = await _connect_and_declare(settings)
    api = await kubeconn.connect()
    publisher = EventPublisher(js)
    selection = PodSelection()
    common: dict[str, Any] = {"namespace": settings.namespace, "watch_timeout": settings.watch_timeout}
    informers: dict[Resource, Informer] = {}
    observers = {
        Resource.MODEL_SERVERS: selection.on_server,
        Resource.INFERENCE_POOLS: selection.on_pool,
        Resource.HTTP_ROUTES: selection.on_route,
        Resource.SERVICES: selection.on_service,
    }
    watched_all = watched_resources(settings.gateway_mode)
    # selector sources before pods: the pod informer waits for their selectors
    for watched in sorted(watched_all, key=lambda w: w.resource == Resource.PODS):
        backoff = Backoff(maximum=settings.backoff_max)
        if watched.resource == Resource.PODS:
            selectors_synced = [informers[r].synced for r in observers if r in informers]
            informers[watched.resource] = PodInformer(
                api, js, publisher, watched, selection=selection, selectors_synced=selectors_synced,
                backoff=backoff, **common,
            )  # fmt: skip
        else:
            observer = observers.get(watched.resource)
            informer_type = CredentialInformer if watched.resource == Resource.CREDENTIALS else Informer
            informers[watched.resource] = informer_type(
                api, js, publisher, watched, backoff=backoff, observer=observer, **common
            )

    def ready() -> bool:
        return nc.is_connected and all(i.synced.is_set() for i in informers.values())

    probes = ProbeServer(settings.probe_host, settings.probe_port, ready=ready)
    port = await probes.start()
    log.info("watcher probes on %s:%d, watching %s", settings.probe_host, port, settings.namespace or "all")
    tasks = [asyncio.create_task(i.run(), name=f"informer-{i.resource}") for i in informers.values()]
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        await cancel_all([*tasks, stopper])
        with contextlib.suppress(TimeoutError):  # what was sent is stored before the connection goes
            await asyncio.wait_for(publisher.flush(), FLUSH_ON_STOP)
        await probes.stop()
        await api.close()
        await nc.drain()


async def amain() -> None:
    await serve(WatcherSettings(), run)
