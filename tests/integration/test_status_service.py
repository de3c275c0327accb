"""The status service as a process (with the watcher feeding it) against the real stack.

Pods and children are created by the test itself (no converter or applier), so these tests pin
down what status computes from the cluster and from the desired sets and apply results on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from ferry_schemas import labels as L
from ferry_schemas.bus import (
    DESIRED_STREAM,
    MSG_ID_HEADER,
    RESULTS_STREAM,
    ApplyResult,
    ConversionError,
    DesiredSet,
    OwnerKey,
)
from ferry_schemas.runtime import kubeconn
from ferry_schemas.runtime.jetstream import declare_streams
from ferry_schemas.runtime.members import owner
from ferry_schemas.runtime.spans import read_spans
from ferry_schemas.workload import serving_revision
from ferry_status.service import RETIRED_DURABLES
from ferry_watcher.kube import list_objects, watch_events
from nats.aio.client import Client
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from tests.conftest import KubeEnv
from tests.support.cluster import Cluster, booster, eventually
from tests.support.services import ServiceProcess, ServiceSet

pytestmark = [pytest.mark.integration, pytest.mark.slow]
JSON = dict[str, Any]
ROLES = [
    {
        "name": "leader",
        "replicas": 1,
        "workerReplicas": 1,
        "entryTemplate": {"spec": {"containers": [{"name": "c", "image": "img:1"}]}},
        "workerTemplate": {"spec": {"containers": [{"name": "c", "image": "img:1"}]}},
    }
]


def status_services(kube: KubeEnv, nats_url: str, namespace: str, tmp_path: Path, **env: str) -> ServiceSet:
    """The watcher and status for ``namespace`` (not started), with ``env`` on top."""
    return ServiceSet(
        tmp_path / "logs",
        {
            **kube.env,
            "FERRY_NATS_URL": nats_url,
            "FERRY_WATCH_NAMESPACE": namespace,
            "FERRY_TRACE_FILE": str(tmp_path / "spans.jsonl"),
            **env,
        },
    )


@pytest.fixture
def services(kube: KubeEnv, nats_url: str, namespace: str, tmp_path: Path) -> Iterator[ServiceSet]:
    started = status_services(kube, nats_url, namespace, tmp_path)
    started.add("status", instance=1)
    started.add("status", instance=2)  # two replicas split the keys (ferry_status_members)
    started.start(["watcher", "status-1", "status-2"])
    try:
        yield started
    finally:
        started.stop()


def serving_manifest(name: str, namespace: str, replicas: int, owner: JSON | None = None) -> JSON:
    meta: JSON = {"name": name, "namespace": namespace}
    if owner is not None:
        meta["labels"] = {
            L.BOOSTER_MODEL_UID: owner["metadata"]["uid"],
            L.BOOSTER_MODEL_NAME: owner["metadata"]["name"],
        }
        meta["ownerReferences"] = [
            {
                "apiVersion": L.WORKLOAD_API_VERSION,
                "kind": "ModelBooster",
                "controller": True,
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {
        "apiVersion": L.WORKLOAD_API_VERSION,
        "kind": "ModelServing",
        "metadata": meta,
        "spec": {"replicas": replicas, "template": {"roles": ROLES}},
    }


def pods_for(serving: JSON, group: int) -> list[JSON]:
    name = serving["metadata"]["name"]
    revision = serving_revision(ROLES)
    pods = []
    for index in (0, 1):
        labels = {
            L.MS_NAME: name,
            L.MS_GROUP_NAME: L.group_name(name, group),
            L.MS_ROLE: "leader",
            L.MS_ROLE_ID: "leader-0",
            L.MS_REVISION: revision,
        }
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": L.pod_name(L.group_name(name, group), "leader-0", index),
                    "labels": labels,
                    "ownerReferences": [
                        {
                            "apiVersion": L.WORKLOAD_API_VERSION,
                            "kind": "ModelServing",
                            "name": name,
                            "uid": serving["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": {"containers": [{"name": "c", "image": "img:1"}]},
            }
        )
    return pods


def test_serving_status_follows_its_pods(services: ServiceSet, kube: KubeEnv, namespace: str) -> None:
    cluster = Cluster(kube, namespace)
    cluster.apply(serving_manifest("ms", namespace, replicas=2))
    serving = eventually(lambda: cluster.get("ModelServing", "ms"), 30, "the ModelServing")
    eventually(lambda: cluster.condition_is("ModelServing", "ms", "Progressing"), 30, "Progressing")
    for group in (0, 1):
        for pod in pods_for(serving, group):
            cluster.apply(pod)

    def counted() -> JSON | None:
        status: JSON = (cluster.get("ModelServing", "ms") or {}).get("status") or {}
        return status if status.get("replicas") == 2 else None

    status = eventually(counted, 30, "two groups counted")
    assert status["availableReplicas"] == 0
    assert status["labelSelector"] == (
        "modelserving.volcano.sh/entry=true,modelserving.volcano.sh/name=ms,"
        "modelserving.volcano.sh/role=leader,modelserving.volcano.sh/role-id=leader-0"
    )
    progressing_since = eventually(
        lambda: cluster.condition_with("ModelServing", "ms", "Progressing"), 5, "Progressing"
    )["lastTransitionTime"]
    for pod in cluster.list("Pod", f"{L.MS_NAME}=ms"):
        cluster.mark_ready(pod)
    eventually(lambda: cluster.condition_is("ModelServing", "ms", "Available"), 30, "Available")
    final = cluster.get("ModelServing", "ms")
    assert final is not None
    status = final["status"]
    assert status["availableReplicas"] == status["updatedReplicas"] == status["currentReplicas"] == 2
    assert status["updateRevision"] == status["currentRevision"] == serving_revision(ROLES)
    assert status["observedGeneration"] == final["metadata"]["generation"]
    progressing = cluster.condition("ModelServing", "ms", "Progressing")
    assert progressing is not None
    assert progressing["status"] == "False"
    # the scale subresource reads replicas and the selector from status
    scale_path = f"/apis/{L.WORKLOAD_API_VERSION}/namespaces/{namespace}/modelservings/ms/scale"
    scale = json.loads(kube.kubectl_run("get", "--raw", scale_path).stdout)
    assert scale["status"]["replicas"] == 2
    assert progressing["lastTransitionTime"] >= progressing_since


def owner_key(booster: JSON, generation: int) -> OwnerKey:
    return OwnerKey(
        api_version=L.WORKLOAD_API_VERSION,
        kind="ModelBooster",
        resource="modelboosters",
        namespace=booster["metadata"]["namespace"],
        name=booster["metadata"]["name"],
        uid=booster["metadata"]["uid"],
        generation=generation,
    )


async def publish(nc: Client, stream: str, subject: str, data: bytes, msg_id: str) -> None:
    await nc.jetstream().publish(subject, data, stream=stream, headers={MSG_ID_HEADER: msg_id})


async def test_booster_status_from_bus_outcome_and_servings(
    services: ServiceSet, kube: KubeEnv, namespace: str, nc: Client
) -> None:
    cluster = Cluster(kube, namespace)
    cluster.apply(
        {
            "apiVersion": L.WORKLOAD_API_VERSION,
            "kind": "ModelBooster",
            "metadata": {"name": "mb", "namespace": namespace},
            "spec": {
                "backend": {
                    "name": "b",
                    "type": "vLLM",
                    "modelURI": "hf://x/y",
                    "replicas": 1,
                    "workers": [{"type": "server", "image": "img", "pods": 1}],
                }
            },
        }
    )
    booster = eventually(lambda: cluster.get("ModelBooster", "mb"), 30, "the booster")
    generation = booster["metadata"]["generation"]

    # the converter refuses it
    refused = DesiredSet(
        owner=owner_key(booster, generation),
        errors=[ConversionError(field="spec.backend", message="no way to build this")],
    )
    await publish(nc, DESIRED_STREAM, refused.subject, refused.to_bytes(), refused.msg_id)
    failed = await asyncio.to_thread(
        eventually, lambda: cluster.condition_with("ModelBooster", "mb", "Failed"), 30, "Failed"
    )
    assert "no way to build this" in failed["message"]

    # fixed: children desired and applied, the ModelServing exists but is not available yet
    child = {"apiVersion": L.WORKLOAD_API_VERSION, "kind": "ModelServing", "metadata": {"name": "mb-b"}}
    desired = DesiredSet(owner=owner_key(booster, generation), children=[child])
    await publish(nc, DESIRED_STREAM, desired.subject, desired.to_bytes(), desired.msg_id)
    applied = ApplyResult(owner=owner_key(booster, generation), ok=True)
    await publish(nc, RESULTS_STREAM, applied.subject, applied.to_bytes(), applied.msg_id)
    await asyncio.to_thread(cluster.apply, serving_manifest("mb-b", namespace, replicas=1, owner=booster))
    await asyncio.to_thread(
        eventually, lambda: cluster.condition_is("ModelBooster", "mb", "Initialized"), 30, "Init"
    )
    assert await asyncio.to_thread(cluster.condition_is, "ModelBooster", "mb", "Failed", "False")
    assert await asyncio.to_thread(cluster.condition_is, "ModelBooster", "mb", "Active", "False")

    serving = await asyncio.to_thread(cluster.get, "ModelServing", "mb-b")
    assert serving is not None
    for pod in pods_for(serving, 0):
        await asyncio.to_thread(cluster.apply, pod)
    for pod in await asyncio.to_thread(cluster.list, "Pod", f"{L.MS_NAME}=mb-b"):
        await asyncio.to_thread(cluster.mark_ready, pod)
    await asyncio.to_thread(
        eventually, lambda: cluster.condition_is("ModelBooster", "mb", "Active"), 30, "Active"
    )
    final = await asyncio.to_thread(cluster.get, "ModelBooster", "mb")
    assert final is not None
    assert final["status"]["availableReplicas"] == 1
    assert final["status"]["observedGeneration"] == generation


# ------------------------------------------------------------------ level-triggered start, replicas


def written_keys(proc: ServiceProcess) -> list[str]:
    """``<kind> <namespace>/<name>`` of each status write ``proc`` logged, in order."""
    assert proc.process is not None
    lines = Path(proc.process.log).read_text().splitlines()
    messages = (json.loads(line).get("message", "") for line in lines if line.startswith("{"))
    return [m.removesuffix(" status written") for m in messages if m.endswith(" status written")]


def member_id(proc: ServiceProcess) -> str:
    """The membership id ``proc`` logged at start."""
    assert proc.process is not None
    for line in Path(proc.process.log).read_text().splitlines():
        if line.startswith("{") and (found := MEMBER.search(json.loads(line).get("message", ""))):
            return found.group(1)
    raise AssertionError(f"{proc.label} logged no member id")


MEMBER = re.compile(r"^status replica (\S+) in ")


def test_a_change_made_while_status_was_stopped_is_written_after_it_starts(
    kube: KubeEnv, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    """Level-triggered start: no durable consumer keeps the change for it; its views' snapshot does."""
    started = status_services(kube, nats_url, namespace, tmp_path, FERRY_STATUS_FIRST_WRITE_HOLD="0")
    started.start(["watcher", "status"])
    try:
        cluster = Cluster(kube, namespace)
        cluster.apply(serving_manifest("ms", namespace, replicas=1))
        serving = eventually(lambda: cluster.get("ModelServing", "ms"), 30, "the ModelServing")
        eventually(lambda: cluster.condition_is("ModelServing", "ms", "Progressing"), 30, "Progressing")
        started["status"].stop()
        for pod in pods_for(serving, 0):
            cluster.apply(pod)
        assert not ((cluster.get("ModelServing", "ms") or {}).get("status") or {}).get("replicas")
        started["status"].start()
        started["status"].wait_ready()

        def counted() -> bool:
            return ((cluster.get("ModelServing", "ms") or {}).get("status") or {}).get("replicas") == 1

        eventually(counted, 30, "the group counted by the restarted status service")
    finally:
        started.stop()


def test_an_object_created_while_status_starts_gets_its_first_status_in_its_creations_trace(
    kube: KubeEnv, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    """Start-up resync keeps the trace: a ModelServing created while status was not running (its
    status has not observed its generation) is reconciled in the trace the watcher began for it."""
    started = status_services(kube, nats_url, namespace, tmp_path, FERRY_STATUS_FIRST_WRITE_HOLD="0")
    started.add("status")
    started.start(["watcher"])
    try:
        cluster = Cluster(kube, namespace)
        cluster.apply(serving_manifest("late", namespace, replicas=1))
        spans_file = Path(started.env["FERRY_TRACE_FILE"])

        def named(service: str) -> list[JSON]:
            return [
                span for span in read_spans(spans_file)
                if span["service"] == service and span["attributes"].get("ferry.object.name") == "late"
            ]  # fmt: skip

        created = eventually(lambda: named("ferry-watcher"), 30, "the watcher's span of the new ModelServing")
        started["status"].start()
        started["status"].wait_ready()
        eventually(lambda: cluster.condition_is("ModelServing", "late", "Progressing"), 30, "a status")
        reconciles = eventually(lambda: named("ferry-status"), 30, "status's reconcile span")
        assert reconciles[0]["traceId"] in {span["traceId"] for span in created}, (
            "the first reconcile after start is not in the creation's trace"
        )
    finally:
        started.stop()


def test_two_status_replicas_write_disjoint_keys(
    kube: KubeEnv, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    """Both replicas hear every change; each key's status is written by the replica that owns it."""
    started = status_services(  # a long member TTL: a loaded machine's late heartbeat drops no one
        kube, nats_url, namespace, tmp_path, FERRY_STATUS_FIRST_WRITE_HOLD="0", FERRY_MEMBER_TTL="30"
    )
    replicas = [started.add("status", instance=1), started.add("status", instance=2)]
    started.start(["watcher", "status-1", "status-2"])
    try:
        ids = {member_id(proc): proc for proc in replicas}

        def both_live() -> bool:
            logs = [Path(p.process.log).read_text() if p.process else "" for p in replicas]
            return all(f"live members {sorted(ids)}" in log for log in logs)

        eventually(both_live, 30, "each replica to see the other")
        cluster = Cluster(kube, namespace)
        names = [f"ms-{i}" for i in range(12)]
        for name in names:
            cluster.apply(serving_manifest(name, namespace, replicas=1))

        def all_written() -> bool:
            return all(((cluster.get("ModelServing", n) or {}).get("status") or {}) for n in names)

        eventually(all_written, 60, "every ModelServing's status")
        keys = {name: f"modelservings {namespace}/{name}" for name in names}
        by_replica = {member: set(written_keys(proc)) for member, proc in ids.items()}
        for name, key in keys.items():
            want = owner(f"modelservings/{namespace}/{name}", ids)
            assert [m for m, written in by_replica.items() if key in written] == [want], (name, by_replica)
    finally:
        started.stop()


# ------------------------------------------------------------------ first-status coalescing

HOLD, HOLD_MAX = 1.5, 12.0
"""The coalescing tests' first-write hold: short, so a busy pipeline must be what extends it."""


@pytest.fixture
def held_status(kube: KubeEnv, nats_url: str, namespace: str, tmp_path: Path) -> Iterator[ServiceSet]:
    """One status replica (the hold is per replica) with a short first-write hold and bound."""
    started = status_services(
        kube, nats_url, namespace, tmp_path,
        FERRY_STATUS_FIRST_WRITE_HOLD=str(HOLD), FERRY_STATUS_FIRST_WRITE_HOLD_MAX=str(HOLD_MAX),
    )  # fmt: skip
    started.start(["watcher", "status"])
    try:
        yield started
    finally:
        started.stop()


async def watch_statuses(
    kube: KubeEnv, namespace: str, written: dict[str, list[JSON]], stop: asyncio.Event
) -> None:
    """Every status each booster of ``namespace`` is stored with, in order (one per status write)."""
    api = await kubeconn.connect(str(kube.kubeconfig))
    path = f"/apis/{L.WORKLOAD_API_VERSION}/namespaces/{namespace}/modelboosters"
    try:
        _, version = await list_objects(api, path, None)
        while not stop.is_set():
            async for event in watch_events(api, path, None, version, 30):
                obj = event.get("object") or {}
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                status = obj.get("status")
                seen = written.setdefault(obj["metadata"]["name"], [])
                if event.get("type") == "MODIFIED" and status and (not seen or seen[-1] != status):
                    seen.append(status)
                if stop.is_set():
                    return
    finally:
        await api.close()


async def test_first_statuses_wait_for_a_busy_pipeline_and_failures_and_the_bound_do_not(
    held_status: ServiceSet, kube: KubeEnv, namespace: str, nc: Client
) -> None:
    """While the pipeline works through a backlog (another new booster keeps taking steps), a new
    booster's first status waits far past the fixed hold and is written once, complete, when its
    own apply result comes; a refused booster's Failed is written at once; a booster whose pipeline
    never moves gets its status at the bound although the backlog goes on."""
    cluster = Cluster(kube, namespace)
    written: dict[str, list[JSON]] = {}
    stop = asyncio.Event()
    watching = asyncio.create_task(watch_statuses(kube, namespace, written, stop))
    boosters: dict[str, JSON] = {}

    async def create(name: str) -> None:
        await asyncio.to_thread(cluster.apply, booster(name, namespace))
        boosters[name] = await asyncio.to_thread(
            eventually, lambda: cluster.get("ModelBooster", name), 30, name
        )

    async def keep_busy() -> None:
        """The backlog: ``busy``'s desired set produced again and again (each one a step)."""
        steps = 0
        while not stop.is_set():
            step = DesiredSet(owner=owner_key(boosters["busy"], 1), children=[])
            steps += 1  # the same set produced again: its own message id, or JetStream keeps one
            await publish(nc, DESIRED_STREAM, step.subject, step.to_bytes(), f"{step.msg_id}/{steps}")
            await asyncio.sleep(HOLD / 4)

    await create("busy")
    busy = asyncio.create_task(keep_busy())
    try:
        for name in ("slow", "bad", "stuck"):
            await create(name)
        started = time.monotonic()
        # a refused booster is never held: Failed while the backlog goes on
        refused = DesiredSet(
            owner=owner_key(boosters["bad"], 1),
            errors=[ConversionError(field="spec.backend", message="no way to build this")],
        )
        await publish(nc, DESIRED_STREAM, refused.subject, refused.to_bytes(), refused.msg_id)
        failed = await asyncio.to_thread(
            eventually, lambda: cluster.condition_with("ModelBooster", "bad", "Failed"), 30, "Failed"
        )
        assert "no way to build this" in failed["message"]
        # well past the fixed hold, the others still wait: the pipeline is busy, not stalled
        await asyncio.to_thread(
            eventually, lambda: time.monotonic() - started > 3 * HOLD or None, 30, "three holds"
        )
        for name in ("slow", "stuck"):
            assert not (await asyncio.to_thread(cluster.get, "ModelBooster", name) or {}).get("status"), name

        # slow's turn comes: its status is written once, complete
        desired = DesiredSet(owner=owner_key(boosters["slow"], 1), children=[])
        await publish(nc, DESIRED_STREAM, desired.subject, desired.to_bytes(), desired.msg_id)
        applied = ApplyResult(owner=owner_key(boosters["slow"], 1), ok=True)
        await publish(nc, RESULTS_STREAM, applied.subject, applied.to_bytes(), applied.msg_id)
        await asyncio.to_thread(
            eventually, lambda: cluster.condition_is("ModelBooster", "slow", "Initialized"), 30, "Init"
        )
        # stuck's pipeline never moved: its hold ends at the bound, while the backlog goes on
        await asyncio.to_thread(
            eventually,
            lambda: (cluster.get("ModelBooster", "stuck") or {}).get("status"),
            30,
            "stuck's status",
        )
        assert not busy.done()
        assert time.monotonic() - started < HOLD_MAX + 10
        await asyncio.to_thread(
            eventually, lambda: len(written.get("slow", [])) >= 1, 10, "slow's write watched"
        )
    finally:
        stop.set()
        await busy
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    assert len(written["slow"]) == 1, written["slow"]
    assert [c["type"] for c in written["bad"][0]["conditions"] if c["status"] == "True"] == ["Failed"]
    assert "busy" not in written or len(written["busy"]) <= 1


async def test_an_upgraded_status_deletes_the_durables_its_predecessor_read(
    kube: KubeEnv, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    """Its views drive its keys now: the durable consumers an earlier status read are deleted at
    start, so the server stops keeping their state and pending counts."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    started = status_services(kube, nats_url, namespace, tmp_path)
    try:
        await declare_streams(js)
        for stream, durable in RETIRED_DURABLES:
            await js.add_consumer(stream, ConsumerConfig(durable_name=durable, ack_wait=30.0))
            assert (await js.consumer_info(stream, durable)).name == durable
        started.start(["watcher", "status"])
        started["status"].wait_ready()

        async def left() -> list[str]:
            remaining = []
            for stream, durable in RETIRED_DURABLES:
                with contextlib.suppress(NotFoundError):
                    remaining.append((await js.consumer_info(stream, durable)).name)
            return remaining

        for _ in range(150):  # 30 s: status deletes them once its views are synced, beside readiness
            if not (remaining := await left()):
                break
            await asyncio.sleep(0.2)
        assert not remaining, f"still there 30 s after status was ready: {remaining}"
    finally:
        started.stop()
        await nc.close()
