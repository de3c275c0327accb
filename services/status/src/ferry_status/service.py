"""The status process: bus-fed views whose changes name keys, one keyed work queue, probes.

Inputs: pod, ModelServing and ModelBooster changes on ``FERRY_OBJECTS`` (the object view), apply
results and booster desired sets (the pipeline view). Each change the views apply names the status
objects it affects; those keys go to one :class:`WorkQueue` (coalesced, retried forever with
back-off) with the change's trace context (:mod:`ferry_status.triggers`: why no durable consumer is
needed and nothing is lost). A reconcile reads only the views, which already hold its trigger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ferry_schemas.bus import DESIRED_STREAM, OBJECTS_STREAM, RESULTS_STREAM, Resource
from ferry_schemas.runtime import ProbeServer, kubeconn
from ferry_schemas.runtime.jetstream import connect, delete_durables
from ferry_schemas.runtime.lifecycle import serve, settle_heap
from ferry_schemas.runtime.members import Members, key_name, members_bucket, replica_id
from ferry_schemas.runtime.resync import Resync
from ferry_schemas.runtime.tasks import cancel_all
from ferry_schemas.runtime.view import ObjectView
from ferry_schemas.runtime.workqueue import WorkQueue

from ferry_status.bus_state import PipelineView
from ferry_status.gateway.controller import GatewayStatusController
from ferry_status.gateway.kube import GatewayApi
from ferry_status.kube import StatusApi
from ferry_status.providers import ProviderStatusController
from ferry_status.reconciler import Key, StatusReconciler
from ferry_status.serving_status import pod_kept, serving_kept
from ferry_status.settings import StatusSettings
from ferry_status.triggers import Triggers

log = logging.getLogger(__name__)

JSON = dict[str, Any]

READ = (Resource.PODS, Resource.MODEL_SERVINGS, Resource.MODEL_BOOSTERS, Resource.LEADER_WORKER_SETS)
"""What reconciles read from the view (and whose changes name keys)."""
PROJECTED: dict[str, Callable[[JSON], JSON]] = {
    Resource.PODS: pod_kept,
    Resource.MODEL_SERVINGS: serving_kept,
}
"""What the view keeps of pods and ModelServings: what a status reads (never a pod template). Every
object is kept packed: parsed, the pods, boosters and slimmed ModelServings of 2000 boosters take
24.9 MiB of the view, packed 11.9 (``tracemalloc``), and status's peak RSS at 2000 must stay under
100 MiB; a slimmed ModelServing inflates in a third of the time a whole one did."""
RETIRED_DURABLES = (
    (OBJECTS_STREAM, f"ferry-status-{Resource.PODS}"),
    (OBJECTS_STREAM, f"ferry-status-{Resource.MODEL_SERVINGS}"),
    (OBJECTS_STREAM, f"ferry-status-{Resource.MODEL_BOOSTERS}"),
    (RESULTS_STREAM, "ferry-status-applied"),
    (DESIRED_STREAM, "ferry-status-desired"),
)
"""The durable consumers an earlier status read (its views now drive its keys): deleted at start, so
the server stops keeping their state and pending counts."""


async def run(settings: StatusSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, settings.service)
    js = nc.jetstream()
    api = await kubeconn.connect(pool_size=kubeconn.REQUEST_POOL_SIZE)
    view = ObjectView(js, READ, project=PROJECTED, pack=True)
    pipeline = PipelineView(js)
    queue: WorkQueue[Key]
    reconciler = StatusReconciler(
        StatusApi(api), pipeline, view,
        first_write_hold=settings.first_write_hold, first_write_hold_max=settings.first_write_hold_max,
        requeue=lambda key, delay, context: queue.add_after(key, delay, context),
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
    member_id = replica_id()
    members = Members(js, members_bucket(settings.service), member_id, ttl=settings.member_ttl)
    log.info("status replica %s in %s", member_id, members.bucket)
    triggers = Triggers(
        view, queue, own_write=reconciler.own_write, owns=lambda key: members.owns(key_name(key)),
        needs_reconcile=reconciler.needs_reconcile,
    )  # fmt: skip
    view.on_change(triggers.object_changed)
    pipeline.on_change(triggers.pipeline_changed)

    def ready() -> bool:
        gateways_ready = gateways is None or gateways.synced
        views_ready = view.synced and pipeline.synced and providers.synced and gateways_ready
        return nc.is_connected and views_ready and triggers.live

    probes = ProbeServer(settings.probe_host, settings.probe_port, ready=ready)
    port = await probes.start()
    log.info("status probes on %s:%d", settings.probe_host, port)
    await members.start()
    await view.start()
    await pipeline.start()
    # a reconcile reads every resource of the views: none runs before they hold the world (a
    # status computed from half of it would be written); then every key they hold that this
    # replica owns is queued once, and again on every membership change (the keys it took over)

    async def synced() -> None:
        await asyncio.gather(view.wait_synced(), pipeline.wait_synced(), members.wait_known())

    first = [asyncio.create_task(synced()), asyncio.create_task(stop.wait())]
    await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    for waiting in first:
        waiting.cancel()
    tasks = []
    if view.synced and pipeline.synced:
        log.info("views synced: %d status keys queued", triggers.start())
        await delete_durables(js, RETIRED_DURABLES)  # housekeeping: never delays the first statuses
        members.on_change(lambda: log.info("members changed: %d status keys queued", triggers.resync()))

        async def resync() -> int:
            return triggers.resync()

        periodic = Resync(settings.service, settings.resync_period, resync)
        tasks.append(asyncio.create_task(periodic.run(), name="status-resync"))
    # again now that the views hold their snapshot, which lives as long as the process too
    settle_heap()
    try:
        await stop.wait()
    finally:
        await cancel_all(tasks)
        if gateways is not None:
            await gateways.stop()
        await providers.stop()
        await members.stop()
        await queue.stop()
        await view.stop()
        await pipeline.stop()
        await probes.stop()
        await api.close()
        await nc.drain()


async def amain() -> None:
    await serve(StatusSettings(), run)
