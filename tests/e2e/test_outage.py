"""A 120 s API-server outage in the middle of reconciling 50 boosters: all converge, no dead letters.

kube-apiserver is frozen (SIGSTOP: connections hang, as in a network partition or an overloaded
server) while the pipeline is creating children, then thawed. Every reconcile that failed meanwhile
is retried with capped back-off while its message is kept in progress, so nothing is redelivered
past ``max_deliver`` and nothing lands on the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import nats
import pytest
from ferry_local.natsd import NatsServer
from ferry_schemas import labels as L
from ferry_schemas.bus import DEAD_LETTER_STREAM

from tests.conftest import KubeEnv
from tests.support.cluster import Cluster, booster, eventually
from tests.support.processes import processes
from tests.support.services import ServiceSet

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
BOOSTERS = 50
OUTAGE = 120.0


def apiserver_pid(kube: KubeEnv) -> int | None:
    """The local kube-apiserver serving ``kube.server`` (None on any other cluster)."""
    port = str(urlparse(kube.server).port)
    return next((p.pid for p in processes() if p.argv[0].endswith("kube-apiserver") and port in p.argv), None)


@pytest.fixture
def frozen_apiserver(kube: KubeEnv) -> Iterator[int]:
    pid = apiserver_pid(kube)
    if pid is None:
        pytest.skip("needs the local stack's kube-apiserver process (not an external cluster)")
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)  # never leave the session's API server frozen


def complete(cluster: Cluster, names: list[str]) -> bool:
    servings = cluster.names("ModelServing")
    routes = cluster.names("ModelRoute")
    pods = {p["metadata"]["labels"].get(L.MS_NAME) for p in cluster.list("Pod", L.MS_NAME)}
    initialized = {
        b["metadata"]["name"]
        for b in cluster.list("ModelBooster")
        if any(
            c.get("type") == "Initialized" and c.get("status") == "True"
            for c in (b.get("status") or {}).get("conditions") or []
        )
    }
    return all(
        f"{n}-main" in servings and n in routes and f"{n}-main" in pods and n in initialized for n in names
    )


async def test_an_api_server_outage_mid_reconcile_converges_without_dead_letters(
    pipeline: ServiceSet, cluster: Cluster, frozen_apiserver: int, e2e_nats: NatsServer
) -> None:
    names = [f"out{i:03d}" for i in range(BOOSTERS)]
    listing = {"apiVersion": "v1", "kind": "List", "items": [booster(n, cluster.namespace) for n in names]}
    cluster.kube.kubectl_run("create", "-f", "-", input=json.dumps(listing))
    eventually(lambda: len(cluster.names("ModelServing")) >= 5, 120, "reconciling under way")

    os.kill(frozen_apiserver, signal.SIGSTOP)
    stopped = time.monotonic()
    await asyncio.sleep(OUTAGE)  # the outage itself (no effect to poll for: nothing can reach the server)
    os.kill(frozen_apiserver, signal.SIGCONT)
    assert time.monotonic() - stopped >= OUTAGE

    eventually(lambda: complete(cluster, names), 600, f"all {BOOSTERS} boosters converged", interval=3)
    for service in pipeline.services.values():
        assert service.alive(), f"{service.label} died during the outage"

    nc = await nats.connect(e2e_nats.url)
    try:
        info = await nc.jetstream().stream_info(DEAD_LETTER_STREAM)
        assert info.state.messages == 0, f"{info.state.messages} dead letter(s) after the outage"
    finally:
        await nc.close()
