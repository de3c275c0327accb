"""Faults while reconciling (issue 5, item 6): every service and nats-server killed and restarted
in the middle of reconciling 50 boosters, with two watchers publishing at once; afterwards the
cluster holds exactly the desired children — nothing missing, nothing extra — and no message
ended in the dead-letter stream. Plus a stale duplicate replayed after a newer change."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats
import pytest
from ferry_local.natsd import NatsServer
from ferry_local.processes import ManagedProcess
from ferry_schemas import labels as L
from ferry_schemas.bus import (
    DEAD_LETTER_STREAM,
    DESIRED_STREAM,
    MSG_ID_HEADER,
    OBJECTS_STREAM,
    RESULTS_STREAM,
    ObjectEvent,
    desired_subject,
    object_subject,
)

from tests.support.cluster import Cluster, booster, eventually
from tests.support.services import ServiceSet

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]
JSON = dict[str, Any]
BOOSTERS = 50


def names(cluster: Cluster, kind: str, selector: str | None = None) -> set[str]:
    return cluster.names(kind, selector)


def converged(cluster: Cluster, wanted: list[str]) -> bool:
    children = {f"{n}-main" for n in wanted}
    return (
        names(cluster, "ModelServing") == children
        and names(cluster, "ModelServer") == children
        and names(cluster, "ModelRoute") == set(wanted)
        and names(cluster, "Pod", L.MS_NAME) == {f"{c}-0-leader-0-0" for c in children}
        and names(cluster, "PodGroup", L.MS_NAME) == {f"{c}-0" for c in children}
    )


def test_kill_and_restart_everything_while_reconciling_fifty_boosters(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess, e2e_nats: NatsServer
) -> None:
    second = pipeline.add("watcher", instance=2)
    second.start()
    second.wait_ready()
    wanted = [f"b{i:02d}" for i in range(BOOSTERS)]
    listing = {"apiVersion": "v1", "kind": "List", "items": [booster(n, cluster.namespace) for n in wanted]}
    t0 = time.monotonic()
    cluster.apply(listing)

    # each fault lands while the boosters are being reconciled: after some progress since the last one
    made = progressed(e2e_nats.url, 0)
    for label in ("converter", "applier", "status", "watcher"):
        pipeline[label].kill()
        pipeline[label].start()
        made = progressed(e2e_nats.url, made)
    print(f"{made} apply results before the NATS restart", flush=True)
    e2e_nats.restart()
    for proc in pipeline.services.values():
        proc.wait_ready(120)

    print(f"faults injected after {time.monotonic() - t0:.1f}s", flush=True)
    eventually(lambda: converged(cluster, wanted), 240, f"exactly the children of {BOOSTERS} boosters")
    print(f"converged after {time.monotonic() - t0:.1f}s", flush=True)

    def all_active() -> bool:
        return all(cluster.condition_is("ModelBooster", n, "Active") for n in wanted)

    eventually(all_active, 240, "every booster Active")
    print(f"all Active after {time.monotonic() - t0:.1f}s", flush=True)
    pipeline.check_alive()
    assert converged(cluster, wanted), "children changed after convergence"
    assert asyncio.run(dead_letters(e2e_nats.url)) == 0, "messages were dead-lettered"


def progressed(url: str, before: int) -> int:
    """Wait until the applier published more apply results than ``before`` (or all it will: one per
    booster and one per ModelServing); how many. Read off the stream: listing with kubectl takes
    seconds on a loaded machine, long enough for the pipeline to finish between two faults."""

    def made() -> int:
        count = asyncio.run(results(url))
        return count if count > before or count >= 2 * BOOSTERS else 0

    return eventually(made, 120, f"more than {before} apply results")


async def results(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(RESULTS_STREAM)).state.messages)
    finally:
        await nc.close()


async def dead_letters(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(DEAD_LETTER_STREAM)
        return int(info.state.messages)
    finally:
        await nc.close()


def test_a_stale_object_event_replayed_after_a_newer_one_changes_nothing(
    pipeline: ServiceSet, cluster: Cluster, kubelet: ManagedProcess, e2e_nats: NatsServer
) -> None:
    cluster.apply(booster("stale", cluster.namespace, replicas=1))
    eventually(lambda: cluster.get("ModelServing", "stale-main"), 60, "the ModelServing")
    subject = object_subject("modelboosters", cluster.namespace, "stale")
    old, _ = asyncio.run(last_object(e2e_nats.url, subject))
    assert old.generation == 1

    cluster.apply(booster("stale", cluster.namespace, replicas=2))
    eventually(
        lambda: ((cluster.get("ModelServing", "stale-main") or {}).get("spec") or {}).get("replicas") == 2,
        60, "the ModelServing at 2 replicas",
    )  # fmt: skip
    eventually(lambda: len(names(cluster, "Pod", f"{L.MS_NAME}=stale-main")) == 2, 60, "two groups of pods")
    eventually(lambda: cluster.condition_is("ModelBooster", "stale", "Active"), 60, "Active at generation 2")

    # a slow second watcher publishes the generation-1 object after the generation-2 one: the
    # converter (view-driven, nothing to wait for an ack of) converts it and finds it stale
    stale_before = stale_conversions(pipeline)
    asyncio.run(replay(e2e_nats.url, old))
    eventually(lambda: stale_conversions(pipeline) > stale_before, 60, "the converter finding it stale")
    # then a newer change: once it went through the pipeline, so did everything queued before it
    cluster.patch("ModelBooster", "stale", {"metadata": {"labels": {"touched": "yes"}}})

    def touched() -> int:
        event, sequence = asyncio.run(last_object(e2e_nats.url, subject))
        return sequence if (event.object["metadata"].get("labels") or {}).get("touched") else 0

    patched = eventually(touched, 60, "the watcher's event of the label patch")
    desired = desired_subject("modelboosters", cluster.namespace, "stale")
    eventually(
        lambda: asyncio.run(handled(e2e_nats.url, subject, patched, desired)), 60,
        "every consumer past the label patch's event and the desired set that followed it",
    )  # fmt: skip
    serving = cluster.get("ModelServing", "stale-main")
    assert serving is not None
    assert serving["spec"]["replicas"] == 2, "an older desired set overwrote a newer one"
    assert len(names(cluster, "Pod", f"{L.MS_NAME}=stale-main")) == 2
    final = cluster.get("ModelBooster", "stale")
    assert final is not None
    assert final["status"]["observedGeneration"] == 2


def stale_conversions(pipeline: ServiceSet) -> float:
    """Booster events the converter found older than the desired set stored (its metrics)."""
    wanted = 'ferry_converter_conversions_total{outcome="stale",resource="modelboosters"}'
    for line in pipeline["converter"].metrics().splitlines():
        if line.startswith(wanted):
            return float(line.split()[-1])
    return 0.0


async def last_object(url: str, subject: str) -> tuple[ObjectEvent, int]:
    """The last object event on ``subject`` and its stream sequence."""
    nc = await nats.connect(url)
    try:
        raw = await nc.jetstream().get_last_msg(OBJECTS_STREAM, subject)
        return ObjectEvent.model_validate(json.loads(raw.data or b"{}")), int(raw.seq or 0)
    finally:
        await nc.close()


def covers(pattern: str, subject: str) -> bool:
    """Whether the NATS subject filter ``pattern`` (``*`` one token, ``>`` the rest) takes ``subject``."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or token not in ("*", tokens[i]):
            return False
    return len(wanted) == len(tokens)


async def handled(url: str, subject: str, sequence: int, desired: str) -> bool:
    """Whether every durable consumer taking ``subject`` acknowledged its message ``sequence`` and all
    before it (none left: the converter, the applier and status follow objects through their views),
    and then every one taking ``desired`` the last desired set published there (the applier): it
    handled whatever those messages caused."""
    nc = await nats.connect(url)
    try:
        js, jsm = nc.jetstream(), nc.jsm()

        async def acked(stream: str, subj: str, seq: int) -> bool:
            infos = await jsm.consumers_info(stream)
            return all(
                i.ack_floor.stream_seq >= seq for i in infos if covers(i.config.filter_subject or ">", subj)
            )

        if not await acked(OBJECTS_STREAM, subject, sequence):
            return False
        return await acked(
            DESIRED_STREAM, desired, int((await js.get_last_msg(DESIRED_STREAM, desired)).seq or 0)
        )
    finally:
        await nc.close()


async def replay(url: str, event: ObjectEvent) -> None:
    nc = await nats.connect(url)
    try:
        replayed = event.model_copy(update={"type": "MODIFIED"})
        await nc.jetstream().publish(
            replayed.subject, replayed.to_bytes(), stream=OBJECTS_STREAM,
            headers={MSG_ID_HEADER: f"{replayed.msg_id}/replay"},
        )  # fmt: skip
    finally:
        await nc.close()
