"""The status process: a bus-fed view, durable consumers that name keys, one keyed work queue, probes.

Inputs (one durable per filter, shared by replicas, so nats-server 2.9 works too): pod, ModelServing
and ModelBooster changes on ``FERRY_OBJECTS``, apply results, and booster desired sets. Each message
names the status objects it affects; those keys go to one :class:`WorkQueue` (coalesced, retried
forever with back-off). Object messages first wait until the view holds them (the view and the
durable are separate subscriptions), so a reconcile never reads a state older than its trigger.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable

import msgspec
from ferry_schemas.bus import (
    DESIRED_PREFIX,
    DESIRED_STREAM,
    OBJECTS_STREAM,
    RESULTS_PREFIX,
    RESULTS_STREAM,
    Resource,
    object_filter,
)
from ferry_schemas.object_trigger import ObjectTrigger, decode_trigger
from ferry_schemas.runtime import ProbeServer, kubeconn
from ferry_schemas.runtime.consumer import BadMessage, DurableConsumer, Handler
from ferry_schemas.runtime.jetstream import connect
from ferry_schemas.runtime.lifecycle import serve
from ferry_schemas.runtime.view import ObjectView
from ferry_schemas.runtime.workqueue import WorkQueue
from nats.aio.msg import Msg
from opentelemetry.context import Context

from ferry_status.bus_state import PipelineView
from ferry_status.gateway.controller import GatewayStatusController
from ferry_status.gateway.kube import GatewayApi
from ferry_status.kube import StatusApi
from ferry_status.providers import ProviderStatusController
from ferry_status.reconciler import (
    Key,
    StatusReconciler,
    keys_for_event,
    keys_for_owner_subject,
)
from ferry_status.serving_status import pod_kept
from ferry_status.settings import StatusSettings

log = logging.getLogger(__name__)

VIEWED = (Resource.PODS, Resource.MODEL_SERVINGS, Resource.MODEL_BOOSTERS)
TRIGGERS = VIEWED
READ = (*VIEWED, Resource.LEADER_WORKER_SETS)
"""What reconciles read from the view; TRIGGERS are the object kinds whose changes name keys."""


def object_handler(
    view: ObjectView, queue: WorkQueue[Key], own_write: Callable[[ObjectTrigger], bool] | None = None
) -> Handler:
    """An object change: wait for the view to hold it, then reconcile what it affects (not the object
    itself when the change is ``own_write``: our status write coming back; its owner still is)."""

    async def handle(msg: Msg, context: Context) -> None:
        try:
            trigger = decode_trigger(msg.data)
        except msgspec.DecodeError as exc:  # ValidationError included
            raise BadMessage(f"not an ObjectEvent: {exc}") from exc
        # only the trigger is kept while the handler waits for its reconcile, not the whole object:
        # in a burst thousands wait at once
        keys, resource = keys_for_event(trigger), trigger.resource
        if own_write is not None and own_write(trigger):
            keys = [key for key in keys if key != (resource, trigger.namespace, trigger.name)]
        if not keys:
            return
        sequence = msg.metadata.sequence.stream
        if not await view.wait_for(resource, sequence):
            log.warning(
                "view lags behind %s; reconciling from what it holds, again once it does", msg.subject
            )
            view.when_holds(resource, sequence, requeue(queue, keys))
        await asyncio.gather(*(queue.submit(k, context) for k in keys))

    return handle


def owner_handler(pipeline: PipelineView, queue: WorkQueue[Key]) -> Handler:
    """A desired set or apply result: wait for the pipeline view to hold it, then reconcile its owner."""

    async def handle(msg: Msg, context: Context) -> None:
        try:
            keys = keys_for_owner_subject(msg.subject)
        except ValueError as exc:
            raise BadMessage(str(exc)) from exc
        stream, sequence = msg.metadata.stream, msg.metadata.sequence.stream
        if keys and not await pipeline.wait_for(stream, msg.subject, sequence):
            log.warning(
                "the pipeline view lags behind %s; reconciling from what it holds, again once it does",
                msg.subject,
            )
            pipeline.when_holds(stream, msg.subject, sequence, requeue(queue, keys))
        await asyncio.gather(*(queue.submit(k, context) for k in keys))

    return handle


def requeue(queue: WorkQueue[Key], keys: list[Key]) -> Callable[[], None]:
    """Queue ``keys`` again (a reconcile that read a view without its trigger runs once more)."""

    def add() -> None:
        for key in keys:
            queue.add(key)

    return add


def inputs(
    view: ObjectView,
    pipeline: PipelineView,
    queue: WorkQueue[Key],
    own_write: Callable[[ObjectTrigger], bool] | None = None,
) -> list[tuple[str, str, str, Handler]]:
    """(stream, durable, filter subject, handler) for each input."""
    on_object, on_owner = object_handler(view, queue, own_write), owner_handler(pipeline, queue)
    return [
        *(
            (OBJECTS_STREAM, f"ferry-status-{resource}", object_filter(resource), on_object)
            for resource in TRIGGERS
        ),
        (RESULTS_STREAM, "ferry-status-applied", f"{RESULTS_PREFIX}.>", on_owner),
        (DESIRED_STREAM, "ferry-status-desired", f"{DESIRED_PREFIX}.{Resource.MODEL_BOOSTERS}.>", on_owner),
    ]


async def run(settings: StatusSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, settings.service)
    js = nc.jetstream()
    api = await kubeconn.connect(pool_size=kubeconn.REQUEST_POOL_SIZE)
    view = ObjectView(js, READ, project={Resource.PODS: pod_kept}, pack=True)
    pipeline = PipelineView(js)
    queue: WorkQueue[Key]
    reconciler = StatusReconciler(
        StatusApi(api), pipeline, view,
        first_write_hold=settings.first_write_hold, first_write_hold_max=settings.first_write_hold_max,
        requeue=lambda key, delay: queue.add_after(key, delay),
    )  # fmt: skip
    queue = WorkQueue("status", reconciler.reconcile, workers=settings.workers, settle=settings.settle)
    gateways = None
    if settings.gateway_mode:
        gateways = GatewayStatusController(
            js, GatewayApi(api), controller_name=settings.gateway_controller,
            default_class=settings.gateway_class, default_namespace=settings.gateway_namespace,
            default_port=settings.gateway_port,
        )  # fmt: skip
        await gateways.start()
    providers = ProviderStatusController(js, StatusApi(api), probe_interval=settings.provider_probe_interval)
    await providers.start()
    consumers = [
        DurableConsumer(
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
            max_ack_pending=settings.max_ack_pending,
        )
        for stream, durable, subject, handler in inputs(view, pipeline, queue, reconciler.own_write)
    ]

    def ready() -> bool:
        gateways_ready = gateways is None or gateways.synced
        views_ready = view.synced and pipeline.synced and providers.synced and gateways_ready
        return nc.is_connected and views_ready and all(c.bound.is_set() for c in consumers)

    probes = ProbeServer(settings.probe_host, settings.probe_port, ready=ready)
    port = await probes.start()
    log.info("status probes on %s:%d", settings.probe_host, port)
    await view.start()
    await pipeline.start()
    # a reconcile reads every resource of the views: none runs before they hold the world (a
    # trigger handled earlier would be acked after reading a half-loaded view, and lost)

    async def synced() -> None:
        await asyncio.gather(view.wait_synced(), pipeline.wait_synced())

    first = [asyncio.create_task(synced()), asyncio.create_task(stop.wait())]
    await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    for waiting in first:
        waiting.cancel()
    loaded = view.synced and pipeline.synced
    tasks = [asyncio.create_task(c.run(), name=c.durable) for c in consumers] if loaded else []
    # what start-up built (modules, clients, the views' snapshot) lives as long as the process: out
    # of the collector's way, and a young generation of 10,000 objects, not 700 (as the applier)
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if gateways is not None:
            await gateways.stop()
        await providers.stop()
        await queue.stop()
        await view.stop()
        await pipeline.stop()
        await probes.stop()
        await api.close()
        await nc.drain()


async def amain() -> None:
    await serve(StatusSettings(), run)
