"""Two applier processes on one stack: each owner's changes are acted on by exactly one of them, and
when one is killed the other repairs its owners' drift within seconds.

Every replica follows every object change (its view); ``ferry_schemas.runtime.members`` spreads the
owners over the live replicas (heartbeats in ``ferry_applier_members``, rendezvous hashing). A
ModelRoute deleted by hand re-queues its booster on the replica that owns the booster only: that
replica's ``ferry_applier_messages_total{consumer="view",outcome="modelroutes"}`` rises, the other's
counts the change as ``other-replica``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from ferry_local.natsd import NatsServer
from ferry_schemas.bus import kv_key
from ferry_schemas.runtime.members import members_bucket, owner

from tests.conftest import KubeEnv
from tests.e2e.conftest import pipeline_env
from tests.support.cluster import Cluster, booster, eventually
from tests.support.services import ServiceProcess, ServiceSet

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TTL = 8.0
"""FERRY_MEMBER_TTL of the two appliers: a killed one's owners move after at most this long (not
shorter: a loaded machine's late heartbeat would drop a live replica and blur who acted)."""
REPAIR = 60.0
"""Deadline to poll against (the local stack repairs in a second or two, TTL included)."""
PER_REPLICA = 2
"""Boosters owned by each replica."""


@pytest.fixture(scope="module")
def replicas(kube: KubeEnv, e2e_nats: NatsServer, e2e_namespace: str, e2e_dir: Path) -> Iterator[ServiceSet]:
    env = {
        **pipeline_env(kube, e2e_nats.url, e2e_namespace, e2e_dir / "spans.jsonl"),
        "FERRY_MEMBER_TTL": str(TTL),
    }
    services = ServiceSet(e2e_dir / "logs", env)
    services.add("applier", instance=1)
    try:
        services.start(["watcher", "converter", "applier", "applier-1", "status"])
        yield services
    finally:
        services.stop()


def member_ids(url: str) -> list[str]:
    async def read() -> list[str]:
        nc = await nats.connect(url)
        try:
            kv = await nc.jetstream().key_value(members_bucket("ferry-applier"))
            return [key.split(".", 1)[1] for key in await kv.keys()]  # <scope>.<member id>
        finally:
            await nc.close()

    return asyncio.run(read())


def view_changes(proc: ServiceProcess, outcome: str) -> float:
    """The applier's count of object changes from its view with ``outcome``."""
    pattern = rf'^ferry_applier_messages_total\{{consumer="view",outcome="{outcome}"\}} (\S+)$'
    found = re.search(pattern, proc.metrics(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def settled(procs: list[ServiceProcess]) -> None:
    """Wait until neither applier counts route changes any more (the creation's echoes are in)."""
    last: list[float] = []

    def still() -> bool:
        nonlocal last
        now, last = last, [view_changes(p, "modelroutes") for p in procs]
        return now == last

    eventually(still, REPAIR, "the appliers to settle", interval=1.0)


def route_repaired(cluster: Cluster, name: str, uid: str) -> bool:
    route = cluster.get("ModelRoute", name)
    return route is not None and route["metadata"]["uid"] != uid


def test_each_owner_is_handled_by_one_replica_and_a_killed_ones_owners_move(
    replicas: ServiceSet, cluster: Cluster, e2e_nats: NatsServer
) -> None:
    procs = {p.process.pid: p for p in (replicas["applier"], replicas["applier-1"]) if p.process}

    # holder ids are hostname/pid/suffix: which member each process is
    def both() -> list[str] | None:
        ids = member_ids(e2e_nats.url)
        return ids if len(ids) == 2 else None

    members = eventually(both, 30, "both appliers in the members bucket")
    by_member = {m: procs[int(m.split("/")[1])] for m in members}
    wanted: dict[str, list[str]] = {m: [] for m in members}
    for i in range(200):  # names spread over both replicas, PER_REPLICA each
        name = f"rep{i:03d}"
        mine = wanted[owner(kv_key("modelboosters", cluster.namespace, name), members) or ""]
        if len(mine) < PER_REPLICA:
            mine.append(name)
    names = [n for owned in wanted.values() for n in owned]
    assert len(names) == 2 * PER_REPLICA
    cluster.apply(
        {"apiVersion": "v1", "kind": "List", "items": [booster(n, cluster.namespace) for n in names]}
    )
    eventually(lambda: all(cluster.get("ModelRoute", n) for n in names), REPAIR, "every booster's ModelRoute")

    # steady state: a booster's drift is acted on by its own replica only
    settled(list(by_member.values()))
    for member, owned in wanted.items():
        mine, other = by_member[member], next(p for m, p in by_member.items() if m != member)
        for name in owned:
            uid = cluster.get("ModelRoute", name)["metadata"]["uid"]  # type: ignore[index]
            before = view_changes(mine, "modelroutes"), view_changes(other, "modelroutes")
            cluster.delete("ModelRoute", name)
            eventually(lambda n=name, u=uid: route_repaired(cluster, n, u), REPAIR, f"{name}'s route back")  # type: ignore[misc]
            assert view_changes(mine, "modelroutes") > before[0], f"{name}: its owner did not act"
            assert view_changes(other, "modelroutes") == before[1], f"{name}: the other replica acted too"
            assert view_changes(other, "other-replica") > 0

    # kill one replica (no leaving): the survivor takes its boosters over once its heartbeat expires
    killed, survivor = members
    by_member[killed].kill()
    started = time.monotonic()
    for name in wanted[killed]:
        uid = cluster.get("ModelRoute", name)["metadata"]["uid"]  # type: ignore[index]
        cluster.delete("ModelRoute", name)
        eventually(lambda n=name, u=uid: route_repaired(cluster, n, u), REPAIR, f"{name}'s route back")  # type: ignore[misc]
    print(f"the killed replica's drift repaired {time.monotonic() - started:.1f}s after the kill", flush=True)
    assert view_changes(by_member[survivor], "modelroutes") > 0
    assert by_member[survivor].alive()
