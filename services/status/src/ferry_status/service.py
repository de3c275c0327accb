"""The status process: one durable pull consumer per input, a shared per-key work queue, probes."""

from __future__ import annotations

import asyncio
import logging

from ferry_schemas.bus import (
    DESIRED_PREFIX,
    DESIRED_STREAM,
    OBJECTS_STREAM,
    RESULTS_PREFIX,
    RESULTS_STREAM,
    Resource,
    object_filter,
)
from ferry_schemas.runtime import ProbeServer
from ferry_schemas.runtime.jetstream import connect
from ferry_schemas.runtime.kube import load_api_client
from ferry_schemas.runtime.lifecycle import serve

from ferry_status.consumer import Handler, PullConsumer
from ferry_status.gateway.controller import GatewayStatusController
from ferry_status.gateway.kube import GatewayApi
from ferry_status.kube import StatusApi
from ferry_status.reconciler import StatusReconciler
from ferry_status.settings import StatusSettings

log = logging.getLogger(__name__)


def inputs(reconciler: StatusReconciler) -> list[tuple[str, str, str, Handler]]:
    """(stream, durable, filter subject, handler) for each input; one filter per durable so that
    nats-server 2.9 (no multi-filter consumers) works too."""
    return [
        (OBJECTS_STREAM, "ferry-status-pods", object_filter(Resource.PODS), reconciler.on_object),
        (
            OBJECTS_STREAM,
            "ferry-status-modelservings",
            object_filter(Resource.MODEL_SERVINGS),
            reconciler.on_object,
        ),
        (
            OBJECTS_STREAM,
            "ferry-status-modelboosters",
            object_filter(Resource.MODEL_BOOSTERS),
            reconciler.on_object,
        ),
        (RESULTS_STREAM, "ferry-status-applied", f"{RESULTS_PREFIX}.>", reconciler.on_owner_message),
        (
            DESIRED_STREAM,
            "ferry-status-desired",
            f"{DESIRED_PREFIX}.{Resource.MODEL_BOOSTERS}.>",
            reconciler.on_owner_message,
        ),
    ]


async def run(settings: StatusSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, settings.service)
    js = nc.jetstream()
    api = await load_api_client()
    reconciler = StatusReconciler(StatusApi(api), js, workers=settings.workers, settle=settings.settle)
    gateways = None
    if settings.gateway_mode:
        gateways = GatewayStatusController(
            js, GatewayApi(api), controller_name=settings.gateway_controller,
            default_class=settings.gateway_class, default_namespace=settings.gateway_namespace,
            default_port=settings.gateway_port,
        )  # fmt: skip
        await gateways.start()
    consumers = [
        PullConsumer(
            nc,
            js,
            service=settings.service,
            stream=stream,
            durable=durable,
            subject=subject,
            handler=handler,
            max_deliver=settings.max_deliver,
            ack_wait=settings.ack_wait,
            batch=settings.batch,
        )
        for stream, durable, subject, handler in inputs(reconciler)
    ]

    def ready() -> bool:
        gateways_ready = gateways is None or gateways.synced
        return nc.is_connected and gateways_ready and all(c.bound.is_set() for c in consumers)

    probes = ProbeServer(settings.probe_host, settings.probe_port, ready=ready)
    port = await probes.start()
    log.info("status probes on %s:%d", settings.probe_host, port)
    tasks = [asyncio.create_task(c.run(), name=c.durable) for c in consumers]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if gateways is not None:
            await gateways.stop()
        await probes.stop()
        await api.close()
        await nc.drain()


async def amain() -> None:
    await serve(StatusSettings(), run)
