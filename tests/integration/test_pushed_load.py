"""Engine load pushed over the bus: a ``ferry-runtime`` sidecar reads its engine's ``/metrics`` and
publishes it on ``ferry.load.>``; the router schedules on it without scraping that engine, the
autoscaler's collector reads it without scraping the pod, and when the sidecar stops the load ages
out and the router's own scrape takes over.

Real processes: a ``ferry-mock-engine``, a ``ferry-runtime`` sidecar (as the ``runtime`` NATS user),
the router (as ``router``), nats-server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from ferry_autoscaler.collector import MetricCollector
from ferry_autoscaler.metrics import PUSHED_READS
from ferry_autoscaler.policies import MetricTarget, PodSource, ServingRef
from ferry_local.natsd import service_url
from ferry_local.processes import ManagedProcess, spawn
from ferry_local.readiness import free_port
from ferry_router.state.load_reader import LoadFeed
from ferry_router.state.pushed_load import PushedLoad
from ferry_router.state.table import RoutingTable
from ferry_schemas.load import LOAD_FILTER, EngineLoad, load_subject
from ferry_schemas.runtime.load_board import LOAD_MESSAGES, LoadBoard

from tests.support.router_world import World, model_server, next_ip, pod_object, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVED = "org/load-model"


def start_sidecar(world: World, namespace: str, pod: str, engine_url: str) -> ManagedProcess:
    argv = [
        sys.executable, "-m", "ferry_runtime", "--port", str(free_port()), "--host", "127.0.0.1",
        "--pod", f"{pod}.{namespace}", "--model", SERVED, "--engine-base-url", engine_url,
        "--kv-events-endpoint", f"tcp://127.0.0.1:{free_port()}",
        "--load-interval", "0.2", "--load-heartbeat", "0.5",
    ]  # fmt: skip
    env = {"FERRY_NATS_URL": service_url("runtime", world.nats_url)}
    process = spawn(f"runtime-{pod}", argv, world.log_dir, env)
    world.processes.append(process)
    return process


def load_source(metrics: str, namespace: str, pod: str) -> str | None:
    """The ``source`` label of the router's load-age gauge for ``namespace/pod`` (the router also
    holds the pods other modules published on the shared stream)."""
    for line in metrics.splitlines():
        if (
            line.startswith("ferry_router_endpoint_load_age_seconds{")
            and f'pod="{pod}"' in line
            and f'namespace="{namespace}"' in line
        ):
            return line.split('source="', 1)[1].split('"', 1)[0]
    return None


async def test_pushed_load_reaches_router_and_autoscaler_and_ages_out(bus: World) -> None:
    namespace, port = f"load-{uuid.uuid4().hex[:8]}", free_port()
    engine = bus.engine("load-0", SERVED, port, host=next_ip())
    engine.wait_up()
    sidecar = start_sidecar(bus, namespace, "pod-0", engine.url)

    heard: list[EngineLoad] = []

    async def on_load(msg: Any) -> None:
        load = EngineLoad.model_validate_json(msg.data)
        if load.namespace == namespace:
            heard.append(load)

    sub = await bus.nc.subscribe(LOAD_FILTER, cb=on_load)
    router = bus.router(
        name="load-router",
        env={
            "FERRY_NATS_URL": service_url("router", bus.nats_url),
            "FERRY_ROUTER_LOAD_STALE_AFTER": "5s",  # ten heartbeats: a loaded machine may pause
        },
    )
    board = LoadBoard(bus.js, stale_after=5.0)
    await board.start()
    try:
        async with asyncio.timeout(30):
            while not heard:  # noqa: ASYNC110 (filled by the subscription)
                await asyncio.sleep(0.05)
        load = heard[-1]
        assert load.pod == "pod-0"
        assert load.model == SERVED
        assert load.models is not None
        assert SERVED in load.models
        assert "vllm:num_requests_waiting" in load.series
        assert "kthena:num_requests_waiting" in load.series

        await bus.publish("modelservers", model_server(namespace, "srv", {"app": "load"}, port, model=SERVED))
        await bus.pod(namespace, "pod-0", {"app": "load"}, engine.host)
        router.wait_endpoints(namespace, "srv", 1)
        await asyncio.to_thread(
            wait_until,
            lambda: load_source(router.metrics(), namespace, "pod-0") == "push",
            "pushed load in the router",
        )

        async def pushes(count: int) -> None:
            """Wait for ``count`` more load messages of the sidecar."""
            target = len(heard) + count
            async with asyncio.timeout(10):
                while len(heard) < target:  # noqa: ASYNC110 (filled by the subscription)
                    await asyncio.sleep(0.05)

        await pushes(2)  # a scrape that started as the endpoint appeared has finished by now
        scraped_before = router_scrapes(router.metrics())

        # The autoscaler's collector: the pod's IP answers nothing, so a value can only come from the bus.
        async with asyncio.timeout(10):
            while board.fresh(f"{namespace}/pod-0") is None:  # noqa: ASYNC110 (the board's subscription)
                await asyncio.sleep(0.05)
        before = PUSHED_READS._value.get()
        unreachable = autoscaler_pod(namespace, "pod-0", "127.0.0.1")
        async with aiohttp.ClientSession() as session:

            def pushed(key: str) -> dict[str, float] | None:
                fresh = board.fresh(key)
                return None if fresh is None else fresh.series

            collector = MetricCollector(session, 1.0, pushed)
            target = MetricTarget("waiting", 10.0, PodSource("kthena:num_requests_waiting", port=free_port()))
            collected = await collector.collect([unreachable], ServingRef(namespace, "ms"), [target])
        assert collected.problems == []
        assert collected.ready == {"waiting": 0.0}
        assert PUSHED_READS._value.get() == before + 1

        # While the push is fresh the router does not scrape the engine (five more pushes: over
        # five of its 200 ms scrape intervals).
        await pushes(5)
        assert router_scrapes(router.metrics()) == scraped_before

        sidecar.stop(timeout=5)
        await asyncio.to_thread(
            wait_until,
            lambda: load_source(router.metrics(), namespace, "pod-0") == "scrape",
            "the router's scrape to take over from the stopped sidecar",
        )
        assert router_scrapes(router.metrics()) > scraped_before
        async with asyncio.timeout(10):
            while board.fresh(f"{namespace}/pod-0") is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        await sub.unsubscribe()
        await board.stop()


def autoscaler_pod(namespace: str, name: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "modelserving.volcano.sh/name": "ms",
                "modelserving.volcano.sh/entry": "true",
            },
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "startTime": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def router_scrapes(metrics: str) -> float:
    """Engine scrapes the router made that succeeded: this test's engine is the only one alive
    (other modules' pods are on the shared stream, their engines stopped)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('ferry_router_engine_scrapes_total{result="ok"}')
    )


async def test_load_reader_process_feeds_the_table_and_is_restarted(bus: World) -> None:
    """The router's load reader (a child process on a real NATS): a sidecar's messages reach the
    table in batches; an undecodable one is counted and skipped; a killed reader is replaced and
    the next message arrives through the new one."""
    namespace, port = f"reader-{uuid.uuid4().hex[:8]}", free_port()
    table = RoutingTable()
    table.apply_server(f"{namespace}/srv", model_server(namespace, "srv", {"app": "r"}, port, model=SERVED))
    table.apply_pod(f"{namespace}/pod-0", pod_object(namespace, "pod-0", {"app": "r"}, "127.0.0.2"))
    endpoint = table.endpoints[f"{namespace}/pod-0"]
    feed = LoadFeed(service_url("router", bus.nats_url), stale_after=5.0, batch=0.05)
    pushed = PushedLoad(table, feed)
    bad_before = LOAD_MESSAGES.labels("bad")._value.get()

    async def publish(seq: int, waiting: float) -> None:
        load = EngineLoad(
            namespace=namespace, pod="pod-0", model=SERVED, epoch="e1", seq=seq, sent_at=time.time(),
            waiting=waiting, running=1.0, kv_cache_usage=0.5, models=[SERVED], base_models=[SERVED],
        )  # fmt: skip
        await bus.js.publish(load.subject, load.to_bytes())

    async def until(check: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(20):
            while not check():  # noqa: ASYNC110 (the feed's task fills the table)
                await asyncio.sleep(0.02)

    await pushed.start()
    try:
        await publish(1, 3.0)  # read from the stream's snapshot or live, whichever comes first
        await until(lambda: endpoint.metrics.waiting == 3.0, "the pushed load")
        m = endpoint.metrics
        assert (m.source, m.running, m.kv_cache_usage, m.stale) == ("push", 1.0, 0.5, False)
        assert m.models == frozenset({SERVED})
        assert pushed.is_fresh(m)

        await bus.js.publish(load_subject(namespace, SERVED, "pod-0"), b'{"namespace": 1}')
        await until(lambda: LOAD_MESSAGES.labels("bad")._value.get() > bad_before, "the bad message counted")

        pid = feed.pid
        assert pid is not None
        lower = min(os.getpriority(os.PRIO_PROCESS, 0) + 5, 19)  # requests win a shared core
        await until(lambda: os.getpriority(os.PRIO_PROCESS, pid) == lower, "the reader's niceness")
        os.kill(pid, signal.SIGKILL)
        await until(lambda: feed.restarts == 1 and feed.pid not in (None, pid), "a new load reader")
        await publish(2, 7.0)
        await until(lambda: endpoint.metrics.waiting == 7.0, "load through the new reader")
        pid = feed.pid
    finally:
        await pushed.stop()
    with pytest.raises(ProcessLookupError):  # stopping the feed ends its reader
        os.kill(pid, 0)
