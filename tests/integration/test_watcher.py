"""The watcher as a process against the real API server and NATS JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ferry_local.identities import identities_for
from ferry_schemas.bus import MSG_ID_HEADER, OBJECTS_STREAM, ObjectEvent, object_subject
from ferry_schemas.runtime import kubeconn
from ferry_schemas.runtime.kubeconn import KubeConnection
from ferry_schemas.runtime.spans import read_spans
from ferry_watcher.kube import list_objects, watch_events
from nats.aio.client import Client
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from tests.support.cluster import eventually
from tests.support.services import ServiceProcess, ServiceSet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LABEL = "modelserving.volcano.sh/name"


def pod_manifest(name: str, namespace: str, serving: str = "ms") -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: serving}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    })  # fmt: skip


@pytest.fixture
def watchers(kube, nats_url: str, namespace: str, tmp_path: Path) -> Iterator[ServiceSet]:
    env = {**kube.env, "FERRY_NATS_URL": nats_url, "FERRY_WATCH_NAMESPACE": namespace,
           "FERRY_TRACE_FILE": str(tmp_path / "spans.jsonl"), "FERRY_WATCH_BACKOFF_MAX": "2"}  # fmt: skip
    services = ServiceSet(tmp_path / "logs", env)
    try:
        yield services
    finally:
        services.stop()


async def last_event(nc: Client, subject: str) -> tuple[ObjectEvent, int] | None:
    try:
        raw = await nc.jetstream().get_last_msg(OBJECTS_STREAM, subject)
    except NotFoundError:
        return None
    return ObjectEvent.model_validate(json.loads(raw.data or b"{}")), int(raw.seq or 0)


async def wait_event(
    nc: Client, subject: str, event_type: str, within: float = 30
) -> tuple[ObjectEvent, int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await last_event(nc, subject)
        if found is not None and (
            found[0].type == event_type or (event_type == "LIVE" and not found[0].deleted)
        ):
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {event_type} event on {subject} within {within}s (last: {found})")


ACK_COUNTERS = {"ferry_watcher_events_published_total", "ferry_watcher_events_duplicate_total"}


def pod_events_acked(proc: ServiceProcess) -> int:
    """Pod events the watcher's stream acks confirmed, stored or found already there (its metrics)."""
    acked = 0
    for line in proc.metrics().splitlines():
        name, _, value = line.rpartition(" ")
        if name.split("{", 1)[0] in ACK_COUNTERS and 'resource="pods"' in name:
            acked += int(float(value))
    return acked


async def pod_changes(api: KubeConnection, namespace: str, name: str, since: str, into: list[str]) -> None:
    """Append the message id of every change of pod ``name`` the API server makes, until it is deleted."""
    path = f"/api/v1/namespaces/{namespace}/pods"
    async for event in watch_events(api, path, None, since, 60):
        obj = event.get("object") or {}
        if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and obj["metadata"]["name"] == name:
            into.append(ObjectEvent.from_object(event["type"], "pods", obj).msg_id)
            if event["type"] == "DELETED":
                return


async def test_two_watchers_publish_each_change_once(
    kube, watchers: ServiceSet, nc: Client, namespace: str
) -> None:
    """Both watchers publish every change; the stream stores each exactly once.

    The stream keeps one message per subject, so a change superseded at once (the labelled pod
    deleted right after) may be gone before a consumer is delivered it: what was stored is counted
    by stream sequence against the changes the API server made, not against what a consumer saw.
    """
    watchers.add("watcher", instance=1)
    watchers.add("watcher", instance=2)
    watchers.start(["watcher-1", "watcher-2"])
    js = nc.jetstream()
    received: list[tuple[str, str, str]] = []

    async def collect(msg) -> None:
        headers = msg.headers or {}
        received.append((msg.subject, headers.get(MSG_ID_HEADER, ""), headers.get("traceparent", "")))

    sub = await js.subscribe(
        f"ferry.obj.pods.{namespace}.>", stream=OBJECTS_STREAM, cb=collect, deliver_policy=DeliverPolicy.NEW,
        ordered_consumer=True,
    )  # fmt: skip
    api = await kubeconn.connect(str(identities_for(kube.kubeconfig)["watcher"]))
    changes: list[str] = []
    try:
        _, since = await list_objects(api, f"/api/v1/namespaces/{namespace}/pods", None)
        follow = asyncio.create_task(pod_changes(api, namespace, "p1", since, changes))
        before = (await js.stream_info(OBJECTS_STREAM)).state.last_seq
        kube.kubectl_run("apply", "-f", "-", input=pod_manifest("p1", namespace))
        kube.kubectl_run("label", "pod", "p1", "-n", namespace, "extra=yes")
        kube.kubectl_run("delete", "pod", "p1", "-n", namespace, "--wait=true")
        await asyncio.wait_for(follow, 30)
    finally:
        await api.close()
    # every watcher has had each change acked (stored, or already there): nothing more can be stored
    for proc in watchers.services.values():
        await asyncio.to_thread(
            eventually, lambda proc=proc: pod_events_acked(proc) >= len(changes), 30, f"{proc.label}'s acks"
        )
    after = (await js.stream_info(OBJECTS_STREAM)).state.last_seq
    delivered = lambda: changes[-1] in {msg_id for _, msg_id, _ in received}  # noqa: E731
    await asyncio.to_thread(eventually, delivered, 10, "the tombstone delivered")
    await sub.unsubscribe()

    assert len(changes) >= 3  # created, relabelled, deleted
    assert after - before == len(changes), f"{after - before} messages stored for {len(changes)} changes"
    ids = [msg_id for _, msg_id, _ in received]
    assert len(ids) == len(set(ids)), f"a change was stored twice: {ids}"
    assert set(ids) <= set(changes)
    assert ids[-1] == changes[-1]
    assert ids[-1].endswith("/DELETED")
    assert all(tp.startswith("00-") for _, _, tp in received), "every event carries a traceparent"


async def test_restart_skips_unchanged_objects_and_tombstones_missed_deletes(
    kube, watchers: ServiceSet, nc: Client, namespace: str
) -> None:
    watchers.start(["watcher"])
    for name in ("keep", "gone"):
        kube.kubectl_run("apply", "-f", "-", input=pod_manifest(name, namespace))
    keep_subject = object_subject("pods", namespace, "keep")
    gone_subject = object_subject("pods", namespace, "gone")
    _, keep_seq = await wait_event(nc, keep_subject, "LIVE")
    await wait_event(nc, gone_subject, "LIVE")

    watchers["watcher"].stop()
    kube.kubectl_run("delete", "pod", "gone", "-n", namespace, "--wait=true")
    watchers["watcher"].start()
    watchers["watcher"].wait_ready()

    tombstone, _ = await wait_event(nc, gone_subject, "DELETED")
    assert tombstone.name == "gone"
    assert tombstone.object["metadata"]["name"] == "gone"
    found = await last_event(nc, keep_subject)
    assert found is not None
    assert found[1] == keep_seq, "an unchanged object was published again after the restart"


async def test_ready_only_after_first_list_and_spans_written(
    kube, watchers: ServiceSet, nc: Client, namespace: str
) -> None:
    kube.kubectl_run("apply", "-f", "-", input=pod_manifest("early", namespace))
    watchers.start(["watcher"])
    # ready means listed: the pod that existed before start is already in the stream
    found = await last_event(nc, object_subject("pods", namespace, "early"))
    assert found is not None
    assert found[0].type in ("SYNC", "ADDED")
    spans = read_spans(Path(watchers.env["FERRY_TRACE_FILE"]))
    mine = [s for s in spans if s["attributes"].get("ferry.object.name") == "early"]
    assert mine
    assert mine[0]["service"] == "ferry-watcher"
    assert mine[0]["parentSpanId"] == "", "the watcher's span is the root of the reconcile trace"


async def test_gone_watch_is_relisted_with_tombstones(kube, nc: Client, namespace: str) -> None:
    """In process: the watch breaks with 410 Gone while a pod is deleted; the informer relists from
    the real API server and publishes a tombstone for the object deleted while nobody watched.

    The 410 is injected (a fault, like a killed process): Kubernetes 1.35 serves a watch from an
    ancient resourceVersion out of its watch cache instead of answering 410, so a real one cannot be
    provoked on demand. Everything after it (relist, tombstone) runs against the real servers.
    """
    from ferry_schemas.runtime.kubeconn import ApiError
    from ferry_watcher.informer import Informer
    from ferry_watcher.publisher import EventPublisher
    from ferry_watcher.resources import WATCHED
    from ferry_watcher.service import declare_bus

    js = nc.jetstream()
    await declare_bus(js)
    api = await kubeconn.connect(str(identities_for(kube.kubeconfig)["watcher"]))
    pods = next(w for w in WATCHED if w.plural == "pods")
    try:
        informer = Informer(api, js, EventPublisher(js), pods, namespace=namespace)
        deleted = asyncio.Event()
        real_watch = informer.watch
        expired = 0

        async def watch_that_expires_once(resource_version: str) -> str:
            nonlocal expired
            if not expired:
                expired += 1
                await deleted.wait()  # the watch is down while the pod goes away
                raise ApiError(410, "Expired: too old resource version")
            return await real_watch(resource_version)

        informer.watch = watch_that_expires_once  # type: ignore[method-assign]
        await asyncio.to_thread(kube.kubectl_run, "apply", "-f", "-", input=pod_manifest("old", namespace))
        running = asyncio.create_task(informer.run())
        try:
            subject = object_subject("pods", namespace, "old")
            await wait_event(nc, subject, "LIVE")
            await asyncio.to_thread(kube.kubectl_run, "delete", "pod", "old", "-n", namespace, "--wait=true")
            deleted.set()
            tombstone, _ = await wait_event(nc, subject, "DELETED", within=10)
            assert tombstone.name == "old"
            assert expired == 1
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    finally:
        await api.close()


def plain_pod(name: str, namespace: str, labels: dict[str, str]) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    })  # fmt: skip


def model_server(name: str, namespace: str, labels: dict[str, str]) -> str:
    return json.dumps({
        "apiVersion": "networking.serving.volcano.sh/v1alpha1", "kind": "ModelServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"workloadSelector": {"matchLabels": labels}, "workloadPort": {"port": 8000},
                 "inferenceEngine": "vLLM"},
    })  # fmt: skip


async def test_pods_a_model_server_selects_are_published_and_the_rest_are_not(
    kube, watchers: ServiceSet, nc: Client, namespace: str
) -> None:
    """Pods of any owner join the bus once a ModelServer selects them (Kthena's rule) and leave it
    when nothing does; unrelated pods never appear."""
    # selected before the watcher starts (found by the first list), and afterwards (by a filtered list)
    kube.kubectl_run("apply", "-f", "-", input=model_server("early", namespace, {"app": "early"}))
    for name, labels in (("e1", {"app": "early"}), ("late1", {"app": "late"}), ("other", {"app": "none"})):
        kube.kubectl_run("apply", "-f", "-", input=plain_pod(name, namespace, labels))
    watchers.start(["watcher"])
    subject = lambda name: object_subject("pods", namespace, name)  # noqa: E731
    await wait_event(nc, subject("e1"), "LIVE")

    kube.kubectl_run("apply", "-f", "-", input=model_server("late", namespace, {"app": "late"}))
    await wait_event(nc, subject("late1"), "LIVE")
    kube.kubectl_run("apply", "-f", "-", input=plain_pod("late2", namespace, {"app": "late"}))
    await wait_event(nc, subject("late2"), "LIVE")

    # relabelled out of every selector: a tombstone; the ModelServer deleted: its pods' tombstones
    kube.kubectl_run("label", "pod", "e1", "-n", namespace, "app=moved", "--overwrite")
    await wait_event(nc, subject("e1"), "DELETED")
    kube.kubectl_run("delete", "modelserver", "late", "-n", namespace)
    await wait_event(nc, subject("late1"), "DELETED")
    await wait_event(nc, subject("late2"), "DELETED")
    assert await last_event(nc, subject("other")) is None
    metrics = watchers["watcher"].metrics()
    assert 'ferry_watcher_events_filtered_total{resource="pods"}' in metrics
    assert "ferry_watcher_pod_reselects_total" in metrics


async def test_providers_and_only_labelled_credentials_are_published_without_annotations(
    kube, watchers: ServiceSet, nc: Client, namespace: str
) -> None:
    """ExternalModelProviders go on the bus; of the Secrets only those labelled as provider
    credentials do, with their data but not kubectl's plaintext last-applied annotation."""
    provider = {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1", "kind": "ExternalModelProvider",
        "metadata": {"name": "ext", "namespace": namespace},
        "spec": {"baseURL": "https://api.example.com/v1",
                 "auth": {"secretRef": {"name": "key", "key": "apiKey"}}},
    }  # fmt: skip

    def secret(name: str, labels: dict[str, str]) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "stringData": {"apiKey": "sk-123"},
        })  # fmt: skip

    label = "networking.serving.volcano.sh/external-model-provider-credential"
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(provider))
    kube.kubectl_run("apply", "-f", "-", input=secret("key", {label: "true"}))
    kube.kubectl_run("apply", "-f", "-", input=secret("unrelated", {}))
    watchers.start(["watcher"])
    published, _ = await wait_event(nc, object_subject("externalmodelproviders", namespace, "ext"), "LIVE")
    assert published.object is not None
    assert published.object["spec"]["providerType"] == "OpenAI"  # the CRD default
    credential, _ = await wait_event(nc, object_subject("secrets", namespace, "key"), "LIVE")
    assert credential.object is not None
    assert credential.object["data"] == {"apiKey": "c2stMTIz"}
    assert "annotations" not in credential.object["metadata"]
    assert "sk-123" not in json.dumps(credential.object)

    # unlabelled: never published; the label removed: a tombstone
    kube.kubectl_run("label", "secret", "key", "-n", namespace, f"{label}-")
    await wait_event(nc, object_subject("secrets", namespace, "key"), "DELETED")
    assert await last_event(nc, object_subject("secrets", namespace, "unrelated")) is None
