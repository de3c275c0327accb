"""The autoscaler process: the view, the control loop, demand, leases, probes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid

import aiohttp
from ferry_schemas.autoscaling import DEMAND_PREFIX
from ferry_schemas.bus import Resource
from ferry_schemas.runtime import ProbeServer, kubeconn
from ferry_schemas.runtime.events import EventRecorder
from ferry_schemas.runtime.jetstream import connect, key_value
from ferry_schemas.runtime.lifecycle import serve
from ferry_schemas.runtime.load_board import LoadBoard
from ferry_schemas.runtime.tasks import cancel_all
from ferry_schemas.runtime.view import ObjectView

from ferry_autoscaler.collector import MetricCollector, pod_kept
from ferry_autoscaler.controller import Controller
from ferry_autoscaler.kube import AutoscalerApi
from ferry_autoscaler.leases import LEASES_BUCKET, DeciderLeases
from ferry_autoscaler.scaler import Scaler
from ferry_autoscaler.settings import AutoscalerSettings
from ferry_autoscaler.state_store import StateStore

log = logging.getLogger(__name__)

VIEWED = (
    Resource.AUTOSCALING_POLICIES,
    Resource.AUTOSCALING_POLICY_BINDINGS,
    Resource.MODEL_SERVINGS,
    Resource.PODS,
)


async def control_loop(controller: Controller, view: ObjectView, period: float, stop: asyncio.Event) -> None:
    await view.wait_synced()
    while not stop.is_set():
        controller.kick.clear()
        await controller.sync_all()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(controller.kick.wait(), timeout=period)


async def run(settings: AutoscalerSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, settings.service)
    js = nc.jetstream()
    view = ObjectView(js, VIEWED, project={Resource.PODS: pod_kept})
    connection = await kubeconn.connect(pool_size=kubeconn.REQUEST_POOL_SIZE)
    api = AutoscalerApi(connection)
    events = EventRecorder(connection, "ferry/autoscaler")
    events.start()
    session = aiohttp.ClientSession()
    kv = await key_value(js, LEASES_BUCKET)
    holder = f"{os.environ.get('HOSTNAME') or 'autoscaler'}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    leases = DeciderLeases(kv, holder, settings.lease_ttl)
    board = LoadBoard(js)

    def pushed(pod_key: str) -> dict[str, float] | None:
        load = board.fresh(pod_key)
        return None if load is None else load.series

    scaler = Scaler(
        MetricCollector(session, settings.scrape_timeout, pushed),
        view.get,
        lambda namespace: view.list(Resource.PODS, namespace),
    )
    controller = Controller(view, scaler, api, leases, events, StateStore(kv), settings.workers)
    view.on_change(lambda change: controller.on_change(change.event))
    await view.start()
    await board.start()
    demand = await nc.subscribe(f"{DEMAND_PREFIX}.>", cb=controller.on_demand)

    def ready() -> bool:
        return nc.is_connected and view.synced

    probes = ProbeServer(settings.probe_host, settings.probe_port, ready=ready)
    port = await probes.start()
    log.info(
        "autoscaler %s: probes on %s:%d, sync every %.1fs",
        holder,
        settings.probe_host,
        port,
        settings.sync_period,
    )
    loop = asyncio.create_task(
        control_loop(controller, view, settings.sync_period, stop), name="control-loop"
    )
    try:
        await stop.wait()
    finally:
        await cancel_all([loop])  # the loop reads and writes NATS: a request can swallow one cancel
        await demand.unsubscribe()
        await leases.release_all()
        await events.stop()
        await view.stop()
        await board.stop()
        await probes.stop()
        await session.close()
        await api.close()
        await nc.drain()


async def amain() -> None:
    await serve(AutoscalerSettings(), run)
