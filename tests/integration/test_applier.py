"""The applier against the real local stack: real kube-apiserver (with the garbage collector), real
JetStream, the real watcher (a process) feeding the applier's view. The test publishes desired sets
the way the converter does, and reads the cluster with kubectl and the outcome from FERRY_RESULTS.

Pod readiness is simulated by patching pod status (the local stack has no kubelet).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from ferry_applier.generations import OwnerRecords, Verdict, record_key
from ferry_applier.kube import KubeClient, load_api_client
from ferry_applier.lease import LEASES_BUCKET, LeaseBusy, OwnerLeases
from ferry_applier.metrics import MESSAGES
from ferry_applier.service import Applier, delete_retired_durables
from ferry_applier.settings import ApplierSettings
from ferry_local.identities import identities_for
from ferry_local.node.gang import gang_satisfied, group_of
from ferry_schemas import labels as L
from ferry_schemas.bus import (
    APPLIED_GENERATIONS_BUCKET,
    DEAD_LETTER_STREAM,
    DESIRED_STREAM,
    MSG_ID_HEADER,
    OBJECTS_STREAM,
    RESULTS_STREAM,
    ApplyResult,
    ConversionError,
    DeadLetter,
    DesiredSet,
    ObjectEvent,
    OwnerKey,
    ServingWorkload,
    dead_letter_subject,
    encode_token,
    kv_key,
    result_subject,
)
from ferry_schemas.runtime import ProbeServer
from ferry_schemas.runtime.jetstream import declare_streams, key_value
from ferry_schemas.runtime.members import members_bucket
from ferry_schemas.runtime.workqueue import RETRIES
from ferry_schemas.workload import blueprint, serving_revision
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import KubeEnv
from tests.support.cluster import Cluster, is_ready
from tests.support.services import ServiceSet

pytestmark = pytest.mark.integration
JSON = dict[str, Any]
OWNER_LABEL = "ferry.test/owner"


@dataclass
class Harness:
    """An in-process applier bound to one namespace, plus the bus and cluster around it."""

    namespace: str
    cluster: Cluster
    js: JetStreamContext
    applier: Applier
    kube: KubeClient
    seen_pods: dict[str, JSON] = field(default_factory=dict)

    async def publish_desired(self, desired: DesiredSet) -> None:
        await self.js.publish(
            desired.subject,
            desired.to_bytes(),
            stream=DESIRED_STREAM,
            headers={MSG_ID_HEADER: desired.msg_id},
        )

    async def idle(self, within: float = 60.0) -> None:
        """Wait until the consumers have nothing pending or unacknowledged and no reconcile is queued,
        three polls in a row (the watcher publishes the applier's own writes a moment later)."""
        deadline = time.monotonic() + within
        quiet = 0
        while quiet < 3:
            busy = bool(len(self.applier.queue))
            for stream, durable in self.applier.durables:
                info = await self.js.consumer_info(stream, durable)
                busy = busy or bool(info.num_pending) or bool(info.num_ack_pending)
            quiet = 0 if busy else quiet + 1
            assert time.monotonic() < deadline, "the applier did not settle"
            await asyncio.sleep(0.1)

    async def result(self, owner: OwnerKey) -> ApplyResult | None:
        subject = result_subject(owner.resource, owner.namespace, owner.name)
        try:
            raw = await self.js.get_last_msg(RESULTS_STREAM, subject)
        except NotFoundError:
            return None
        return ApplyResult.model_validate_json(raw.data or b"")

    async def pod_events(self) -> int:
        """Play the watcher for pods: one event per changed pod, a tombstone per vanished one."""
        current = {p["metadata"]["name"]: p for p in self.cluster.list("Pod", L.MS_NAME)}
        published = 0
        for name, pod in current.items():
            before = self.seen_pods.get(name)
            if (
                before is not None
                and before["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]
            ):
                continue
            await self._publish_pod("MODIFIED" if before else "ADDED", pod)
            published += 1
        for name, pod in self.seen_pods.items():
            if name not in current or current[name]["metadata"]["uid"] != pod["metadata"]["uid"]:
                await self._publish_pod("DELETED", pod)
                published += 1
        self.seen_pods = current
        return published

    async def _publish_pod(self, event_type: str, pod: JSON) -> None:
        event = ObjectEvent.from_object(event_type, "pods", pod)  # type: ignore[arg-type]
        await self.js.publish(
            event.subject, event.to_bytes(), stream=OBJECTS_STREAM, headers={MSG_ID_HEADER: event.msg_id}
        )

    async def settle(self, rounds: int = 20) -> None:
        """Feed pod events until the applier stops changing pods."""
        for _ in range(rounds):
            await self.idle()
            if not await self.pod_events():
                return
        raise AssertionError("pods kept changing")

    def pods(self, serving: str) -> dict[str, JSON]:
        return {p["metadata"]["name"]: p for p in self.cluster.list("Pod", f"{L.MS_NAME}={serving}")}

    def mark_ready(self, serving: str) -> int:
        """The stand-in kubelet of these isolation tests, gang-aware as the local node: a pod comes up
        only once its PodGroup's minMember (and minTaskMember) is met by the pods that exist."""
        pods = self.pods(serving)
        groups = {g["metadata"]["name"]: g for g in self.cluster.list("PodGroup", f"{L.MS_NAME}={serving}")}
        members: dict[str, list[JSON]] = {}
        for pod in pods.values():
            if (group := group_of(pod)) is not None:
                members.setdefault(group, []).append(pod)
        marked = 0
        for pod in pods.values():
            group = group_of(pod)
            if group is not None and (
                group not in groups or not gang_satisfied(groups[group], members[group])
            ):
                continue
            if not is_ready(pod):
                self.cluster.mark_ready(pod)
                marked += 1
        return marked


@pytest.fixture
def watcher(kube: KubeEnv, nats_url: str, namespace: str, tmp_path: Path) -> Iterator[ServiceSet]:
    """The real watcher for ``namespace``: it feeds FERRY_OBJECTS, which the applier's view reads."""
    env = {**kube.env, "FERRY_NATS_URL": nats_url, "FERRY_WATCH_NAMESPACE": namespace}
    started = ServiceSet(tmp_path / "logs", env)
    started.start(["watcher"])
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def harness(
    request: pytest.FixtureRequest, kube: KubeEnv, nats_url: str, namespace: str, watcher: ServiceSet
) -> AsyncIterator[Harness]:
    """An applier for ``namespace``; indirect parametrisation gives the number of replicas."""
    nc: Client = await nats.connect(nats_url)
    js = nc.jetstream()
    await declare_streams(js)
    settings = ApplierSettings(
        nats_url=nats_url,
        namespace=namespace,
        desired_consumer="test-desired",
        max_deliver=4,
        ack_wait=20.0,
        backoff=0.2,
        backoff_max=2.0,
    )
    api = await load_api_client(str(identities_for(kube.kubeconfig)["applier"]))
    kube_client = KubeClient(api, timeout=20.0)
    applier = Applier(settings, kube_client)
    await applier.start()
    replicas = [Applier(settings, kube_client) for _ in range(getattr(request, "param", 1) - 1)]
    for replica in replicas:  # more replicas share the same durable consumers and leases
        await replica.start()
    for started in (applier, *replicas):
        assert started.view is not None
        await asyncio.wait_for(started.view.wait_synced(), timeout=30)
        await asyncio.wait_for(started.resynced.wait(), timeout=30)  # its reconciles carry no trace
    try:
        yield Harness(namespace, Cluster(kube, namespace), js, applier, kube_client)
    finally:
        for replica in replicas:
            await replica.stop()
        await applier.stop()
        for stream, durable in applier.durables:
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(stream, durable)
        await api.close()
        await nc.drain()


# ------------------------------------------------------------------ plain children


def configmap_owner(h: Harness, name: str) -> OwnerKey:
    h.cluster.kube.kubectl_run("create", "configmap", name, "-n", h.namespace)
    obj = h.cluster.kube.kubectl_run(
        "get", "configmap", name, "-n", h.namespace, "-o", "jsonpath={.metadata.uid}"
    )
    return OwnerKey(
        api_version="v1",
        kind="ConfigMap",
        resource="configmaps",
        namespace=h.namespace,
        name=name,
        uid=obj.stdout,
    )


def route(owner: OwnerKey, name: str, weight: int = 100) -> JSON:
    return {
        "apiVersion": L.NETWORKING_API_VERSION,
        "kind": "ModelRoute",
        "metadata": {"name": name, "labels": {OWNER_LABEL: owner.name}},
        "spec": {
            "modelName": name,
            "rules": [{"targetModels": [{"modelServerName": "srv", "weight": weight}]}],
        },
    }


def desired_routes(owner: OwnerKey, generation: int, *routes: JSON) -> DesiredSet:
    return DesiredSet(
        owner=owner.model_copy(update={"generation": generation}),
        children=list(routes),
        managed_kinds=["ModelRoute"],
        owner_selector={OWNER_LABEL: owner.name},
    )


def route_versions(h: Harness) -> dict[str, str]:
    return {r["metadata"]["name"]: r["metadata"]["resourceVersion"] for r in h.cluster.list("ModelRoute")}


async def test_children_are_applied_with_owner_references_and_a_second_identical_set_changes_nothing(
    harness: Harness,
) -> None:
    h = harness
    owner = configmap_owner(h, "owner-a")
    await h.publish_desired(desired_routes(owner, 1, route(owner, "r1"), route(owner, "r2")))
    await h.idle()
    result = await h.result(owner)
    assert result is not None
    assert result.ok, result
    assert sorted((c.name, c.action) for c in result.children) == [("r1", "created"), ("r2", "created")]
    for obj in h.cluster.list("ModelRoute"):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "ConfigMap",
            "owner-a",
            owner.uid,
            True,
        )
    shown = h.cluster.kube.kubectl_run(
        "get",
        "modelroutes.networking.serving.volcano.sh",
        "-n",
        h.namespace,
        "-o",
        "json",
        "--show-managed-fields",
    )
    for obj in json.loads(shown.stdout)["items"]:
        managers = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
        # POSTed: ferry's Update entry, folded into Apply by a later apply (test_kube_writes.py)
        assert managers == {("ferry", "Update")}, managers
    versions = route_versions(h)

    # the same desired set again (a redelivery or a converter restart): nothing changes
    again = desired_routes(owner, 1, route(owner, "r1"), route(owner, "r2"))
    await h.js.publish(again.subject, again.to_bytes(), stream=DESIRED_STREAM)  # no msg id: not deduplicated
    await h.idle()
    assert route_versions(h) == versions
    result = await h.result(owner)
    assert result is not None
    # a reconcile that changed nothing publishes no new result: the last one still says what happened
    assert [c.action for c in result.children] == ["created", "created"]


async def test_an_older_generation_is_ignored_and_a_newer_one_prunes(harness: Harness) -> None:
    h = harness
    owner = configmap_owner(h, "owner-b")
    await h.publish_desired(desired_routes(owner, 2, route(owner, "r1", 40), route(owner, "r2")))
    await h.idle()
    consumer = h.applier.desired_durable
    stale_before = MESSAGES.labels(consumer, "stale")._value.get()

    await h.publish_desired(desired_routes(owner, 1, route(owner, "r1", 90), route(owner, "old")))
    await h.idle()
    assert MESSAGES.labels(consumer, "stale")._value.get() == stale_before + 1
    routes = {r["metadata"]["name"]: r for r in h.cluster.list("ModelRoute")}
    assert set(routes) == {"r1", "r2"}
    assert routes["r1"]["spec"]["rules"][0]["targetModels"][0]["weight"] == 40

    # generation 3 drops r2: it is pruned; a same-labelled object of another owner is left alone
    foreign = route(owner, "foreign") | {
        "metadata": {"name": "foreign", "labels": {OWNER_LABEL: "someone-else"}}
    }
    h.cluster.apply(foreign)
    await h.publish_desired(desired_routes(owner, 3, route(owner, "r1", 40)))
    await h.idle()
    assert {r["metadata"]["name"] for r in h.cluster.list("ModelRoute")} == {"r1", "foreign"}
    result = await h.result(owner)
    assert result is not None
    assert result.ok
    assert ("r2", "pruned") in {(c.name, c.action) for c in result.children}


async def test_a_permanent_api_error_is_reported_once_and_not_retried(harness: Harness) -> None:
    h = harness
    owner = configmap_owner(h, "owner-c")
    await h.publish_desired(desired_routes(owner, 1, route(owner, "fine"), route(owner, "bad", weight=500)))
    await h.idle()
    result = await h.result(owner)
    assert result is not None
    assert (result.ok, result.permanent, result.reason) == (False, True, "ApplyFailed")
    assert "ModelRoute bad" in result.message, result.message
    assert "weight" in result.message, result.message
    assert "100" in result.message  # the API server's own words: "should be less than or equal to 100"
    info = await h.js.consumer_info(DESIRED_STREAM, h.applier.desired_durable)
    assert info.num_redelivered == 0
    assert info.num_ack_pending == 0
    assert h.cluster.get("ModelRoute", "bad") is None

    # a conversion failure: nothing is applied, the reason is published
    failed = desired_routes(owner, 2, route(owner, "never"))
    failed.errors = [ConversionError(field="spec.backend", message="exactly one of backend or backends")]
    await h.publish_desired(failed)
    await h.idle()
    result = await h.result(owner)
    assert result is not None
    assert (result.ok, result.reason) == (False, "ConversionFailed")
    assert "spec.backend: exactly one of backend or backends" in result.message
    assert h.cluster.get("ModelRoute", "never") is None


# ------------------------------------------------------------------ ModelServing workload


def serving_manifest(name: str, replicas: int, *, policy: str = "RoleRecreate", **spec: Any) -> JSON:

    def container() -> JSON:  # one dict per template: a deepcopy keeps shared references shared
        return {"name": "engine", "image": "engine:1"}

    return {
        "apiVersion": L.WORKLOAD_API_VERSION,
        "kind": "ModelServing",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "schedulerName": "volcano",
            "recoveryPolicy": policy,
            "template": {
                "roles": [
                    {
                        "name": "prefill",
                        "replicas": 1,
                        "workerReplicas": 1,
                        "entryTemplate": {"spec": {"containers": [container()]}},
                        "workerTemplate": {"spec": {"containers": [container()]}},
                    },
                    {
                        "name": "decode",
                        "replicas": 1,
                        "workerReplicas": 0,
                        "entryTemplate": {"spec": {"containers": [container()]}},
                    },
                ]
            },
            **spec,
        },
    }


def desired_serving(obj: JSON) -> DesiredSet:
    meta = obj["metadata"]
    bp = blueprint(obj)
    return DesiredSet(
        owner=OwnerKey(
            api_version=obj["apiVersion"],
            kind="ModelServing",
            resource="modelservings",
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            generation=meta["generation"],
        ),
        managed_kinds=["PodGroup", "Pod", "Service"],
        owner_selector={L.MS_NAME: meta["name"]},
        workload=ServingWorkload(
            replicas=obj["spec"]["replicas"], revision=serving_revision(bp["template"]["roles"]), blueprint=bp
        ),
    )


async def apply_serving(h: Harness, manifest: JSON) -> JSON:
    """kubectl apply the ModelServing, then publish what the converter would for it."""
    h.cluster.apply(manifest)
    obj = h.cluster.get("ModelServing", manifest["metadata"]["name"])
    assert obj is not None
    await h.publish_desired(desired_serving(obj))
    await h.settle()
    return obj


def group_names(h: Harness, serving: str) -> set[str]:
    return {p["metadata"]["labels"][L.MS_GROUP_NAME] for p in h.pods(serving).values()}


async def test_serving_pods_by_ordinal_and_scaling_3_1_2(harness: Harness) -> None:
    h = harness
    obj = await apply_serving(h, serving_manifest("ms", 3))
    pods = h.pods("ms")
    expected = {f"ms-{g}-{role}" for g in range(3) for role in ("prefill-0-0", "prefill-0-1", "decode-0-0")}
    assert set(pods) == expected
    for pod in pods.values():
        (ref,) = pod["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["blockOwnerDeletion"]) == (
            "ModelServing",
            obj["metadata"]["uid"],
            True,
        )
        assert pod["spec"]["schedulerName"] == "volcano"
    assert h.cluster.names("Service") == {f"ms-{g}-prefill-0-0" for g in range(3)}  # only roles with workers
    assert h.cluster.names("PodGroup") == {"ms-0", "ms-1", "ms-2"}
    pg = h.cluster.get("PodGroup", "ms-1")
    assert pg is not None
    assert pg["spec"]["minMember"] == 3

    await apply_serving(h, serving_manifest("ms", 1))
    assert group_names(h, "ms") == {"ms-0"}
    assert h.cluster.names("PodGroup") == {"ms-0"}
    assert h.cluster.names("Service") == {"ms-0-prefill-0-0"}

    await apply_serving(h, serving_manifest("ms", 2))
    assert group_names(h, "ms") == {"ms-0", "ms-1"}
    assert h.cluster.names("PodGroup") == {"ms-0", "ms-1"}

    # a PodGroup deleted behind Ferry's back comes back with the tombstone the watcher publishes
    podgroup = h.cluster.get("PodGroup", "ms-1")
    assert podgroup is not None
    h.cluster.delete("PodGroup", "ms-1", wait=True)
    tombstone = ObjectEvent.from_object("DELETED", "podgroups", podgroup)
    await h.js.publish(tombstone.subject, tombstone.to_bytes(), stream=OBJECTS_STREAM)
    await h.idle()
    recreated = h.cluster.get("PodGroup", "ms-1")
    assert recreated is not None
    assert recreated["metadata"]["uid"] != podgroup["metadata"]["uid"]


async def test_no_podgroups_unless_the_scheduler_is_volcano(harness: Harness) -> None:
    h = harness
    manifest = serving_manifest("plain", 2)
    manifest["spec"]["schedulerName"] = "default-scheduler"
    await apply_serving(h, manifest)
    assert len(h.pods("plain")) == 6
    assert h.cluster.names("PodGroup") == set()


def with_image(manifest: JSON, image: str) -> JSON:
    changed = copy.deepcopy(manifest)
    for role in changed["spec"]["template"]["roles"]:
        for key in ("entryTemplate", "workerTemplate"):
            if key in role:
                role[key]["spec"]["containers"][0]["image"] = image
    return changed


def unavailable_groups(h: Harness, serving: str, replicas: int) -> int:
    """Groups among ``0..replicas-1`` that are missing a pod or have one not Ready."""
    by_group: dict[str, list[JSON]] = {}
    for pod in h.pods(serving).values():
        by_group.setdefault(pod["metadata"]["labels"][L.MS_GROUP_NAME], []).append(pod)
    return sum(
        1
        for g in range(replicas)
        if len(by_group.get(f"{serving}-{g}", [])) != 3
        or not all(is_ready(p) for p in by_group[f"{serving}-{g}"])
    )


@pytest.mark.parametrize("harness", [1, 2], indirect=True, ids=["one-replica", "two-replicas"])
async def test_rolling_update_never_has_more_than_max_unavailable_groups_down(harness: Harness) -> None:
    h = harness
    manifest = serving_manifest(
        "roll",
        3,
        rolloutStrategy={
            "type": "ServingGroupRollingUpdate",
            "rollingUpdateConfiguration": {"maxUnavailable": 1},
        },
    )
    obj = await apply_serving(h, manifest)
    h.mark_ready("roll")
    await h.settle()
    old_revision = desired_serving(obj).workload.revision  # type: ignore[union-attr]
    assert unavailable_groups(h, "roll", 3) == 0

    new = await apply_serving(h, with_image(manifest, "engine:2"))
    new_revision = desired_serving(new).workload.revision  # type: ignore[union-attr]
    assert new_revision != old_revision
    worst = 0
    for _ in range(30):
        worst = max(worst, unavailable_groups(h, "roll", 3))
        pods = h.pods("roll")
        revisions = {p["metadata"]["labels"][L.MS_REVISION] for p in pods.values()}
        if revisions == {new_revision} and len(pods) == 9 and all(is_ready(p) for p in pods.values()):
            break
        h.mark_ready("roll")  # the stand-in kubelet: new pods come up
        await h.settle()
    else:
        raise AssertionError(f"the rollout did not finish: {sorted(revisions)}")
    assert worst == 1, "a rollout with maxUnavailable 1 must take groups down one at a time"
    assert {c["spec"]["containers"][0]["image"] for c in h.pods("roll").values()} == {"engine:2"}


@pytest.mark.parametrize(
    ("policy", "replaced"),
    [
        ("RoleRecreate", {"rec-0-prefill-0-0", "rec-0-prefill-0-1"}),
        ("ServingGroupRecreate", {"rec-0-prefill-0-0", "rec-0-prefill-0-1", "rec-0-decode-0-0"}),
        ("None", {"rec-0-prefill-0-1"}),
    ],
)
async def test_a_deleted_pod_is_recovered_per_policy(
    harness: Harness, policy: str, replaced: set[str]
) -> None:
    h = harness
    await apply_serving(h, serving_manifest("rec", 1, policy=policy))
    h.mark_ready("rec")
    await h.settle()
    before = {name: pod["metadata"]["uid"] for name, pod in h.pods("rec").items()}
    assert len(before) == 3

    h.cluster.delete("Pod", "rec-0-prefill-0-1")
    await h.settle()
    after = {name: pod["metadata"]["uid"] for name, pod in h.pods("rec").items()}
    assert set(after) == set(before), "every pod is back under its own name"
    assert {name for name in after if after[name] != before[name]} == replaced


async def test_a_failed_pod_gets_its_grace_period_then_is_replaced(harness: Harness) -> None:
    h = harness
    manifest = serving_manifest("grace", 1)
    manifest["spec"]["template"]["restartGracePeriodSeconds"] = 2
    await apply_serving(h, manifest)
    h.mark_ready("grace")
    await h.settle()
    pod = h.pods("grace")["grace-0-decode-0-0"]
    failed = {"status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}]}}
    h.cluster.kube.kubectl_run(
        "patch", "pod", "grace-0-decode-0-0", "-n", h.namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(failed),
    )  # fmt: skip
    await h.pod_events()
    await asyncio.sleep(0.5)
    assert h.pods("grace")["grace-0-decode-0-0"]["metadata"]["uid"] == pod["metadata"]["uid"], (
        "deleted too early"
    )
    await h.settle()  # the event comes back after the grace period
    replacement = h.pods("grace")["grace-0-decode-0-0"]
    assert replacement["metadata"]["uid"] != pod["metadata"]["uid"]
    assert replacement["status"].get("phase") != "Failed"


# ------------------------------------------------------------------ dead letters, metrics, traces


async def test_bad_input_is_dead_lettered_and_an_unreachable_api_server_is_retried_until_it_answers(
    harness: Harness, kube: KubeEnv, nats_url: str
) -> None:
    h = harness
    dlq = dead_letter_subject(h.applier.settings.service, DESIRED_STREAM, h.applier.desired_durable)
    await h.js.publish(f"ferry.desired.modelboosters.{h.namespace}.junk", b"{not json", stream=DESIRED_STREAM)
    await h.idle()
    letter = DeadLetter.model_validate_json((await h.js.get_last_msg(DEAD_LETTER_STREAM, dlq)).data or b"")
    assert letter.subject.endswith(".junk")
    assert "not a DesiredSet" in letter.error
    assert letter.data == "{not json"

    # an applier whose API server is unreachable: retried with back-off, kept in progress (never
    # redelivered, never dead-lettered), and applied once the API server answers again
    api = await load_api_client(str(identities_for(kube.kubeconfig)["applier"]))
    real_host = api.host
    api.host = "https://127.0.0.1:9"
    settings = ApplierSettings(
        nats_url=nats_url,
        namespace=h.namespace,
        desired_consumer="test-broken",
        max_deliver=2,
        ack_wait=2.0,
        backoff=0.1,
        backoff_max=0.5,
        kube_timeout=2.0,
    )
    await h.applier.stop()  # only the broken applier reconciles from here on
    broken = Applier(settings, KubeClient(api, timeout=2.0))
    retries = RETRIES.labels("applier", "ClientConnectorError")
    before = retries._value.get()
    await broken.start()
    probes = ProbeServer("127.0.0.1", 0, ready=broken.ready)
    port = await probes.start()
    try:
        owner = configmap_owner(h, "owner-d")
        await h.publish_desired(desired_routes(owner, 1, route(owner, "r1")))
        deadline = time.monotonic() + 30
        while retries._value.get() - before < 4:  # > max_deliver attempts, each after ack_wait / 2
            assert time.monotonic() < deadline, "no retries"
            await asyncio.sleep(0.2)
        await asyncio.sleep(settings.ack_wait)  # longer than ack_wait: the message is kept in progress
        info = await h.js.consumer_info(DESIRED_STREAM, broken.desired_durable)
        assert (info.num_ack_pending, info.num_redelivered) == (1, 0)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as ready:
                assert ready.status == 200
            async with session.get(f"http://127.0.0.1:{port}/metrics") as metrics:
                text = await metrics.text()
        for name in ("ferry_workqueue_retries_total", "ferry_consumer_messages_total", "ferry_view_objects"):
            assert name in text, name

        api.host = real_host  # the API server is back
        deadline = time.monotonic() + 30
        while (result := await h.result(owner)) is None:
            assert time.monotonic() < deadline, "not applied after the API server came back"
            await asyncio.sleep(0.2)
        assert result.ok, result
        assert h.cluster.get("ModelRoute", "r1") is not None
        # the applier acks after it published the result: the ack may reach the server a moment later
        deadline = time.monotonic() + 10
        while (info := await h.js.consumer_info(DESIRED_STREAM, broken.desired_durable)).num_ack_pending:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert (info.num_ack_pending, info.num_redelivered) == (0, 0)
        raw = await h.js.get_last_msg(DEAD_LETTER_STREAM, dead_letter_subject(
            settings.service, DESIRED_STREAM, broken.desired_durable))  # fmt: skip
        assert DeadLetter.model_validate_json(raw.data or b"").subject.endswith(".junk")  # only the junk
    finally:
        await probes.stop()
        await broken.stop()
        for stream, durable in broken.durables:
            with contextlib.suppress(NotFoundError):
                await h.js.delete_consumer(stream, durable)
        await api.close()


async def test_the_reconcile_continues_the_incoming_trace(harness: Harness) -> None:
    h = harness
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    owner = configmap_owner(h, "owner-t")
    desired = desired_routes(owner, 1, route(owner, "traced"))
    with provider.get_tracer("test").start_as_current_span("watcher change") as parent:
        headers = {MSG_ID_HEADER: desired.msg_id}
        propagate.inject(headers)
        await h.js.publish(desired.subject, desired.to_bytes(), stream=DESIRED_STREAM, headers=headers)
    await h.idle()
    parent_ctx = parent.get_span_context()
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == parent_ctx.trace_id]
    (process,) = [s for s in spans if s.name.startswith("ferry-applier process ferry.desired.")]
    assert process.parent is not None
    assert process.parent.span_id == parent_ctx.span_id
    (reconcile,) = [s for s in spans if s.name == "applier reconcile"]
    assert reconcile.parent is not None
    assert reconcile.parent.span_id == process.context.span_id
    calls = [s for s in spans if s.name.startswith("k8s ")]
    assert "k8s create ModelRoute" in {s.name for s in calls}  # POSTed: the view does not show it yet
    assert not [s.name for s in calls if s.name.startswith("k8s list")], "reads come from the view"
    assert all(s.parent is not None and s.parent.span_id == reconcile.context.span_id for s in calls)
    raw = await h.js.get_last_msg(RESULTS_STREAM, result_subject(owner.resource, owner.namespace, owner.name))
    assert f"{parent_ctx.trace_id:032x}" in (raw.headers or {}).get("traceparent", "")


async def roll_until(
    h: Harness, serving: str, done: Callable[[dict[str, JSON]], bool], rounds: int = 30
) -> None:
    """Stand-in kubelet and watcher: mark pods ready and feed events until ``done(pods)``."""
    for _ in range(rounds):
        pods = h.pods(serving)
        if done(pods) and all(is_ready(p) for p in pods.values()):
            return
        h.mark_ready(serving)
        await h.settle()
    raise AssertionError(f"{serving} did not converge: {sorted(h.pods(serving))}")


def image_of(pod: JSON) -> str:
    return str(pod["spec"]["containers"][0]["image"])


async def test_role_rolling_update_replaces_only_the_changed_role(harness: Harness) -> None:
    h = harness
    manifest = serving_manifest("rr", 1, rolloutStrategy={"type": "RoleRollingUpdate"})
    roles = manifest["spec"]["template"]["roles"]
    roles[0].update(replicas=2, workerReplicas=0, maxUnavailable=1)
    del roles[0]["workerTemplate"]
    await apply_serving(h, manifest)
    await roll_until(h, "rr", lambda pods: len(pods) == 3)
    decode_uid = h.pods("rr")["rr-0-decode-0-0"]["metadata"]["uid"]

    changed = copy.deepcopy(manifest)
    changed["spec"]["template"]["roles"][0]["entryTemplate"]["spec"]["containers"][0]["image"] = "engine:2"
    obj = await apply_serving(h, changed)
    new_revision = desired_serving(obj).workload.revision  # type: ignore[union-attr]
    worst = 0

    def updated(pods: dict[str, JSON]) -> bool:
        nonlocal worst
        prefill = [p for n, p in pods.items() if "-prefill-" in n]
        worst = max(worst, 2 - sum(1 for p in prefill if is_ready(p)))
        return len(prefill) == 2 and all(image_of(p) == "engine:2" for p in prefill)

    await roll_until(h, "rr", updated)
    await h.settle()  # the last reconcile moves the untouched decode pod's revision label
    pods = h.pods("rr")
    assert pods["rr-0-decode-0-0"]["metadata"]["uid"] == decode_uid, "an unchanged role is never restarted"
    assert image_of(pods["rr-0-decode-0-0"]) == "engine:1"
    assert {p["metadata"]["labels"][L.MS_REVISION] for p in pods.values()} == {new_revision}
    assert worst <= 1, "role maxUnavailable 1: one prefill instance down at a time"


async def test_partition_keeps_the_first_groups_on_the_old_template_even_when_rebuilt(
    harness: Harness,
) -> None:
    h = harness
    strategy = {
        "type": "ServingGroupRollingUpdate",
        "rollingUpdateConfiguration": {"maxUnavailable": 3, "partition": 1},
    }
    manifest = serving_manifest("part", 3, rolloutStrategy=strategy)
    old = desired_serving(await apply_serving(h, manifest)).workload
    await roll_until(h, "part", lambda pods: len(pods) == 9)
    new = desired_serving(await apply_serving(h, with_image(manifest, "engine:2"))).workload
    assert old is not None
    assert new is not None

    def split(pods: dict[str, JSON]) -> bool:
        return len(pods) == 9 and all(
            image_of(p) == ("engine:1" if n.startswith("part-0-") else "engine:2") for n, p in pods.items()
        )

    await roll_until(h, "part", split)
    # losing a pod of the protected group rebuilds it from the old template snapshot
    h.cluster.delete("Pod", "part-0-decode-0-0")
    await roll_until(h, "part", split)
    revisions = {
        p["metadata"]["labels"][L.MS_REVISION] for n, p in h.pods("part").items() if n.startswith("part-0-")
    }
    assert revisions == {old.revision}
    snapshots = h.cluster.kube.kubectl_run("get", "controllerrevisions", "-n", h.namespace, "-o", "name")
    assert set(snapshots.stdout.split()) == {
        f"controllerrevision.apps/part-{old.revision}",
        f"controllerrevision.apps/part-{new.revision}",
    }


async def test_no_pod_is_created_while_its_revision_snapshot_is_refused(harness: Harness) -> None:
    """The snapshot is written alongside the group's PodGroup and Services, and the pods wait for it.

    A snapshot of the revision's name that this ModelServing does not own (here nobody's) is a
    permanent error (an earlier incarnation's is waited for: the garbage collector deletes it): no
    pod is created from a revision whose snapshot was not written, and once the other one is gone
    the next reconcile writes both.
    """
    h = harness
    h.cluster.apply(serving_manifest("snap", 1))
    obj = h.cluster.get("ModelServing", "snap")
    assert obj is not None
    desired = desired_serving(obj)
    assert desired.workload is not None
    name = f"snap-{desired.workload.revision}"
    h.cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {"name": name, "namespace": h.namespace},
            "revision": 1,
            "data": {"workload": {"replicas": 0}},
        }
    )
    await h.publish_desired(desired)
    await h.idle()
    result = await h.result(desired.owner)
    assert result is not None
    assert not result.ok
    assert name in result.message
    assert h.cluster.get("PodGroup", "snap-0") is not None  # written alongside the refused snapshot
    assert h.pods("snap") == {}

    h.cluster.kube.kubectl_run("delete", "controllerrevision", name, "-n", h.namespace, "--wait")
    await h.applier.resync()
    await h.settle()
    assert set(h.pods("snap")) == {"snap-0-prefill-0-0", "snap-0-prefill-0-1", "snap-0-decode-0-0"}
    done = h.cluster.kube.kubectl_run("get", "controllerrevision", name, "-n", h.namespace, "-o", "json")
    (ref,) = json.loads(done.stdout)["metadata"]["ownerReferences"]
    assert ref["uid"] == obj["metadata"]["uid"]


async def test_owner_leases_serialise_replicas_and_expire(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        kv = await key_value(nc.jetstream(), LEASES_BUCKET)
        key = f"test.{uuid.uuid4().hex[:8]}.owner"
        first, second = OwnerLeases(nc, kv, "first", ttl=30.0), OwnerLeases(nc, kv, "second", ttl=0.5)
        revision = await first.acquire(key, wait=1.0)
        with pytest.raises(LeaseBusy):
            await second.acquire(key, wait=0.3)
        await first.release(key, revision)
        abandoned = await second.acquire(key, wait=1.0)  # free again at once
        assert abandoned > revision
        # "second" dies holding it: once its ttl passes, "first" takes it over
        started = time.monotonic()
        taken = await first.acquire(key, wait=5.0)
        assert 0.2 < time.monotonic() - started < 5.0
        await second.release(key, abandoned)  # a late release by the old holder changes nothing
        with pytest.raises(LeaseBusy):
            await second.acquire(key, wait=0.2)
        await first.release(key, taken)
    finally:
        await nc.close()


async def advance(
    records: OwnerRecords,
    owner: OwnerKey,
    sequence: int,
    *,
    latest: bool,
    deleted: bool = False,
    wait: float = 1.0,
) -> Verdict:
    """One reconcile's record write: the lease taken with the facts, released at the end."""
    async with records.hold(record_key(owner), wait=wait) as held:
        return await held.advance(owner, sequence, latest=latest, deleted=deleted)


async def test_the_owner_record_lets_a_delivered_set_through_only_when_nothing_later_was_applied(
    nats_url: str,
) -> None:
    """Two replicas' records on one real KV entry: a delivered desired set is applied without reading
    FERRY_DESIRED unless the entry names a later message of its subject (then it is read afresh)."""
    nc = await nats.connect(nats_url)
    try:
        kv = await key_value(nc.jetstream(), APPLIED_GENERATIONS_BUCKET)
        first, second = OwnerRecords(nc, kv, "first", ttl=30.0), OwnerRecords(nc, kv, "second", ttl=30.0)
        reads: list[str] = []
        read = first.read

        async def counted(key: str) -> Any:
            reads.append(key)
            return await read(key)

        first.read = counted  # type: ignore[method-assign]
        name = f"guard-{uuid.uuid4().hex[:8]}"
        owner = OwnerKey(api_version="v1", kind="ConfigMap", resource="configmaps", namespace="ns", name=name,
                         uid="u-1", generation=1)  # fmt: skip
        key = record_key(owner)

        def at(generation: int, uid: str = "u-1") -> OwnerKey:
            return owner.model_copy(update={"generation": generation, "uid": uid})

        assert await advance(first, at(1), 5, latest=False) is Verdict.APPLY
        assert reads == []  # created without a read
        assert await advance(first, at(1), 5, latest=True) is Verdict.APPLY  # a resync: the same facts
        assert await advance(second, at(2), 9, latest=False) is Verdict.APPLY  # the other replica's newer set
        assert await advance(first, at(1), 5, latest=False) is Verdict.STALE  # an older generation
        assert await advance(first, at(2), 7, latest=False) is Verdict.BEHIND  # delivered before 9: read
        async with first.hold(key, wait=1.0) as held:  # ... and what the read found, under one lease
            assert await held.advance(at(2), 7, latest=False) is Verdict.BEHIND
            assert await held.advance(at(2), 7, latest=True) is Verdict.APPLY
        recorded = await first.read(key)
        assert recorded is not None
        assert recorded.sequence == 9  # the entry's sequence never goes back
        assert recorded.holder == ""  # released
        # a tombstone is recorded: a live set delivered before it is behind, the recreated owner is not
        assert await advance(second, at(2), 11, latest=False, deleted=True) is Verdict.APPLY
        assert await advance(first, at(2), 10, latest=False) is Verdict.BEHIND
        assert await advance(first, at(1, "u-2"), 12, latest=False) is Verdict.APPLY  # create failed: read
        recorded = await first.read(key)
        assert recorded is not None
        assert (recorded.uid, recorded.sequence, recorded.deleted) == ("u-2", 12, False)
        # an entry written before sequences were kept: a delivered set cannot be judged, a read one can
        await kv.put(key, json.dumps({"uid": "u-2", "generation": 1}).encode())
        assert await advance(first, at(2, "u-2"), 13, latest=False) is Verdict.BEHIND
        assert await advance(first, at(2, "u-2"), 13, latest=True) is Verdict.APPLY
    finally:
        await nc.close()


async def test_owner_records_serialise_replicas_expire_and_are_kept_while_alone(nats_url: str) -> None:
    """The record is the lease: one holder at a time, released at the end of a reconcile (or kept by a
    replica that runs alone, and released once another appears), taken over once a dead holder's
    ``until`` passed."""
    nc = await nats.connect(nats_url)
    try:
        kv = await key_value(nc.jetstream(), APPLIED_GENERATIONS_BUCKET)
        alone = True
        first = OwnerRecords(nc, kv, "first", ttl=30.0, alone=lambda: alone)
        second = OwnerRecords(nc, kv, "second", ttl=30.0)
        owner = OwnerKey(api_version="v1", kind="ConfigMap", resource="configmaps", namespace="ns",
                         name=f"lease-{uuid.uuid4().hex[:8]}", uid="u-1", generation=1)  # fmt: skip
        key = record_key(owner)
        async with first.hold(key, wait=1.0) as held:
            assert await held.advance(owner, 1, latest=False) is Verdict.APPLY
            with pytest.raises(LeaseBusy):
                await advance(second, owner, 1, latest=True, wait=0.2)
        # alone: kept between reconciles, taken again with one compare-and-set (no read)
        assert first.kept == 1
        kept = await first.read(key)
        assert kept is not None
        assert kept.holder == "first"
        with pytest.raises(LeaseBusy):
            await advance(second, owner, 1, latest=True, wait=0.2)
        async with first.hold(key, wait=1.0) as held:
            assert await held.advance(owner, 1, latest=True) is Verdict.APPLY
            assert held.entry is not None
            assert held.entry.revision == kept.revision + 1
        alone = False  # another replica appeared: what was kept is released
        assert await first.release_kept() == 1
        assert await advance(second, owner, 1, latest=True) is Verdict.APPLY  # free at once
        # a replica that died holding it (its until in the past soon): taken over once it passed
        until = time.time() + 0.5
        dead = {"uid": "u-1", "generation": 1, "sequence": 1, "holder": "dead", "until": until}
        await kv.put(key, json.dumps(dead).encode())
        started = time.monotonic()
        assert await advance(second, owner, 1, latest=True) is Verdict.APPLY
        assert 0.2 < time.monotonic() - started < 5.0
        taken = await second.read(key)
        assert taken is not None
        assert (taken.holder, taken.sequence) == ("", 1)  # taken, then released; the facts kept
    finally:
        await nc.close()


async def until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        await asyncio.sleep(0.05)


async def test_a_replica_of_the_previous_release_is_excluded_by_its_lease(
    harness: Harness, nats_url: str
) -> None:
    """A rolling upgrade: while a live replica lacks the ``record-lease`` mark (the previous release,
    which knows only ``ferry_applier_leases``), the applier takes that lease too, so an owner the old
    replica holds there is not applied until it lets go; once it left, that lease is not taken."""
    h = harness
    applier = h.applier
    nc = await nats.connect(nats_url)
    try:
        members = await key_value(nc.jetstream(), members_bucket(applier.settings.service))
        assert not applier._legacy_lease_needed()  # only this release's replicas run
        old_member = f"{encode_token(h.namespace)}.old-replica"
        await members.put(old_member, b"")  # the previous release's heartbeat carries no mark
        await until(applier._legacy_lease_needed, "the unmarked replica seen")
        old = OwnerLeases(nc, await key_value(nc.jetstream(), LEASES_BUCKET), "old-replica", ttl=30.0)
        owner = configmap_owner(h, "upgraded")
        key = kv_key(owner.resource, owner.namespace, owner.name)
        held = await old.acquire(key, wait=1.0)
        await h.publish_desired(desired_routes(owner, 1, route(owner, "up")))

        async def delivered() -> bool:
            info = await h.js.consumer_info(DESIRED_STREAM, applier.desired_durable)
            return not info.num_pending

        deadline = time.monotonic() + 10
        while not await delivered():
            assert time.monotonic() < deadline, "the desired set was not delivered"
            await asyncio.sleep(0.05)
        for _ in range(10):  # the reconcile waits in the old lease meanwhile
            assert h.cluster.get("ModelRoute", "up") is None
            await asyncio.sleep(0.05)
        await old.release(key, held)
        await h.idle()
        assert h.cluster.get("ModelRoute", "up") is not None
        await members.delete(old_member)  # it stopped: only this release runs again
        await until(lambda: not applier._legacy_lease_needed(), "the unmarked replica's leaving seen")
    finally:
        await nc.close()


async def test_a_reconcile_slower_than_the_ttl_keeps_its_owner_record(nats_url: str) -> None:
    """The record's lease is heart-beaten while the reconcile runs: another replica cannot enter the
    same owner for three TTLs and more, and enters at once when the reconcile ends."""
    nc = await nats.connect(nats_url)
    try:
        kv = await key_value(nc.jetstream(), APPLIED_GENERATIONS_BUCKET)
        first, second = OwnerRecords(nc, kv, "first", ttl=0.9), OwnerRecords(nc, kv, "second", ttl=0.9)
        owner = OwnerKey(api_version="v1", kind="ConfigMap", resource="configmaps", namespace="ns",
                         name=f"slow-{uuid.uuid4().hex[:8]}", uid="u-1", generation=1)  # fmt: skip
        async with first.hold(record_key(owner), wait=1.0) as held:
            await held.advance(owner, 1, latest=False)
            started = time.monotonic()
            with pytest.raises(LeaseBusy):  # three TTLs and more: the lease never lapses
                await advance(second, owner, 1, latest=True, wait=3.0)
            assert time.monotonic() - started > 3 * first.ttl
        started = time.monotonic()
        assert await advance(second, owner, 1, latest=True) is Verdict.APPLY  # given back at the end
        assert time.monotonic() - started < 0.5
    finally:
        await nc.close()


async def test_a_reconcile_slower_than_the_lease_ttl_keeps_its_lease_and_its_message(nats_url: str) -> None:
    """The lease is heart-beaten and the message kept in progress while the reconcile runs: another
    replica cannot enter the same owner and JetStream does not redeliver the message meanwhile."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = f"LEASE_TEST_{uuid.uuid4().hex[:8].upper()}"
    try:
        await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
        await js.add_consumer(stream, ConsumerConfig(durable_name="work", ack_wait=1.0, max_deliver=5))
        sub = await js.pull_subscribe_bind("work", stream=stream)
        await js.publish(f"{stream.lower()}.owner", b"reconcile me")
        (msg,) = await sub.fetch(1, timeout=5)
        kv = await key_value(js, LEASES_BUCKET)
        key = f"test.{uuid.uuid4().hex[:8]}.owner"
        first, second = OwnerLeases(nc, kv, "first", ttl=0.9), OwnerLeases(nc, kv, "second", ttl=0.9)
        beats = 0

        async def keepalive() -> None:
            nonlocal beats
            beats += 1
            await msg.in_progress()

        async with first.hold(key, wait=1.0, keepalive=keepalive):
            started = time.monotonic()
            with pytest.raises(LeaseBusy):  # three TTLs and more: the lease never lapses
                await second.acquire(key, wait=3.0)
            with pytest.raises(nats.errors.TimeoutError):  # nor does the message's ack wait
                await sub.fetch(1, timeout=0.5)
            assert time.monotonic() - started > 3 * first.ttl
        await msg.ack()
        assert beats >= 3
        released = await second.acquire(key, wait=1.0)  # given back at the end of the reconcile
        await second.release(key, released)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await nc.close()


async def test_the_retired_objects_durable_is_deleted_at_start(nats_url: str) -> None:
    """Object changes come from the view now: an upgraded applier deletes the durable consumer its
    predecessor read (what its start does), so the server stops keeping its state."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await declare_streams(js)
        namespace = f"retired-{uuid.uuid4().hex[:6]}"
        retired = f"applier-objects-{namespace}"
        await js.add_consumer(OBJECTS_STREAM, ConsumerConfig(durable_name=retired, ack_wait=30.0))
        assert (await js.consumer_info(OBJECTS_STREAM, retired)).name == retired
        await delete_retired_durables(js, namespace)
        with pytest.raises(NotFoundError):
            await js.consumer_info(OBJECTS_STREAM, retired)
        await delete_retired_durables(js, namespace)  # nothing left to delete: no error
    finally:
        await nc.close()
