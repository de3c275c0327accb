"""A replicated bus (issue 10, item 3): on a 3-node nats-server cluster with every stream and bucket
in three copies, killing one node — and then the JetStream meta leader — in the middle of reconciling
50 boosters loses nothing: the cluster ends with exactly the desired children, every booster Active,
and nothing dead-lettered."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from ferry_local.binaries import find_binaries
from ferry_local.natsd import NatsCluster, NatsServer
from ferry_local.processes import ManagedProcess
from ferry_schemas.bus import DEAD_LETTER_STREAM, OBJECTS_STREAM

from tests.conftest import KubeEnv
from tests.e2e.conftest import pipeline_env
from tests.e2e.test_restarts import BOOSTERS, converged
from tests.support.cluster import Cluster, booster, eventually
from tests.support.services import ServiceSet

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def nats_cluster(e2e_dir: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster.create(find_binaries().nats_server, e2e_dir / "nats-cluster", e2e_dir / "logs")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def replicated_pipeline(
    kube: KubeEnv, nats_cluster: NatsCluster, e2e_namespace: str, e2e_dir: Path, trace_file: Path
) -> Iterator[ServiceSet]:
    env = {**pipeline_env(kube, nats_cluster.url, e2e_namespace, trace_file), "FERRY_STREAM_REPLICAS": "3"}
    services = ServiceSet(e2e_dir / "logs", env)
    try:
        services.start()
        yield services
    finally:
        services.stop()


def listing(cluster: Cluster, names: list[str]) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "List", "items": [booster(n, cluster.namespace) for n in names]}


def meta_leader(node: NatsServer) -> str:
    with urllib.request.urlopen(f"{node.monitor}/jsz", timeout=5) as resp:
        return str(json.load(resp)["meta_cluster"]["leader"])


async def bus_state(url: str) -> tuple[int, int]:
    """(replicas of FERRY_OBJECTS, dead letters)."""
    nc = await nats.connect(url.split(",")[0])
    try:
        js = nc.jetstream()
        objects = await js.stream_info(OBJECTS_STREAM)
        dead = await js.stream_info(DEAD_LETTER_STREAM)
        return objects.config.num_replicas or 1, int(dead.state.messages)
    finally:
        await nc.close()


def test_killing_a_node_then_the_meta_leader_while_reconciling_fifty_boosters_loses_nothing(
    replicated_pipeline: ServiceSet, nats_cluster: NatsCluster, cluster: Cluster, kubelet: ManagedProcess
) -> None:
    replicas, _ = asyncio.run(bus_state(nats_cluster.url))
    assert replicas == 3
    wanted = [f"r{i:02d}" for i in range(BOOSTERS)]
    t0 = time.monotonic()
    cluster.apply(
        {"apiVersion": "v1", "kind": "List", "items": [booster(n, cluster.namespace) for n in wanted]}
    )

    by_name = {node.name: node for node in nats_cluster.nodes}
    time.sleep(2.0)
    leader = meta_leader(nats_cluster.nodes[0])
    follower = next(node for name, node in by_name.items() if name != leader)
    follower.kill()  # a node that is not the meta leader dies mid-reconcile...
    time.sleep(3.0)
    follower.start()  # ...and comes back with its store
    eventually(lambda: meta_leader(by_name[leader]) in by_name, 60, "a meta leader after the restart")
    time.sleep(2.0)
    leader = meta_leader(by_name[leader])
    by_name[leader].kill()  # then the JetStream meta leader itself
    survivor = next(node for name, node in by_name.items() if name != leader)
    eventually(lambda: meta_leader(survivor) not in ("", leader), 60, "a new meta leader")
    by_name[leader].start()
    print(f"faults injected after {time.monotonic() - t0:.1f}s", flush=True)

    eventually(lambda: converged(cluster, wanted), 300, f"exactly the children of {BOOSTERS} boosters")
    eventually(
        lambda: all(cluster.condition_is("ModelBooster", n, "Active") for n in wanted),
        300,
        "every booster Active",
    )
    print(f"all Active after {time.monotonic() - t0:.1f}s", flush=True)
    replicated_pipeline.check_alive()
    assert converged(cluster, wanted), "children changed after convergence"
    _, dead = asyncio.run(bus_state(nats_cluster.url))
    assert dead == 0, "messages were dead-lettered"
