"""Plays scheduler and kubelet for the local stack.

Binds pending pods to one node when their gang can be met (:mod:`gang`), runs the mock engine for
each bound pod on its own 127.0.x.y (:mod:`engine`), reports the pod Running, then Ready once the
engine answers ``/health``, Failed when the process dies, and finishes graceful deletion (stop the
process, delete with grace 0) as a kubelet does. Level-triggered: every pass looks at all pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from ferry_mock_engine.identity import CHALLENGE_HEADER, PROOF_HEADER, new_secret, verify
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ferry_local.node.addresses import AddressPool
from ferry_local.node.engine import ProcessPlan, engine_port, plan_for
from ferry_local.node.ferrypod import FerryPods, PodSetupError, ferry_container
from ferry_local.node.gang import schedule
from ferry_local.node.images import ImageCatalogue
from ferry_local.node.informer import informer
from ferry_local.node.lease import NodeLease, NodeTaken
from ferry_local.processes import ManagedProcess, spawn, stop_all

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}


@dataclass(frozen=True)
class NodeSettings:
    log_dir: Path
    node_name: str = "ferry-local"
    resync_seconds: float = 1.0
    health_timeout: float = 1.0
    images: ImageCatalogue = field(default_factory=ImageCatalogue.load)
    restart_backoff: float = 10.0  # the kubelet's: 10 s, doubled per restart, capped at 5 min
    restart_backoff_max: float = 300.0


@dataclass
class PodRun:
    """What the node runs for one pod, and what it last reported about it."""

    ip: str
    plan: ProcessPlan
    process: ManagedProcess | None = None
    proven: bool = False  # the engine answered /health with this pod's identity proof
    unpullable: list[str] = field(default_factory=list)  # containers whose image is not in the catalogue
    pull_attempts: int = 0
    restarts: int = 0
    last_exit: Obj | None = None  # the engine container's lastState.terminated
    restart_at: float | None = None  # monotonic time of the next start (back-off), None = running
    terminated: Obj | None = None  # set when restartPolicy says the container stays down
    reported: tuple[Any, ...] = ()
    started_at: str = field(default_factory=lambda: _now())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


OWN_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


def gates_met(pod: Obj) -> bool:
    """Whether every ``spec.readinessGates`` condition is True in the pod's status."""
    gates = [g.get("conditionType") for g in (pod.get("spec") or {}).get("readinessGates") or []]
    have = {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []}
    return all(have.get(gate) == "True" for gate in gates)


def merged_conditions(pod: Obj, wanted: dict[str, bool]) -> list[Obj]:
    """The node's conditions (keeping a transition time while the status stays) plus every other
    writer's conditions (readiness gates) as they are: a merge patch replaces the whole list."""
    current = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
    out = [c for t, c in current.items() if t not in wanted]
    for kind, status in wanted.items():
        value = "True" if status else "False"
        old = current.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == value else None
        out.append({"type": kind, "status": value, "lastTransitionTime": since or _now()})
    return out


class LocalNode:
    def __init__(self, api: client.ApiClient, settings: NodeSettings) -> None:
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self.settings = settings
        self._pods: dict[tuple[str, str], Obj] = {}
        self._podgroups: dict[tuple[str, str], Obj] = {}
        self._nodes: dict[tuple[str, str], Obj] = {}
        """This node's own Node object (its labels decide which pods fit)."""
        self._runs: dict[str, PodRun] = {}
        self._binding: set[str] = set()
        self._addresses = AddressPool()
        self._changed = asyncio.Event()
        self._http = httpx.AsyncClient(timeout=settings.health_timeout)
        self._ferry_pods = FerryPods(api, settings.log_dir / "ferry-pods")
        holder = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"
        self.lease = NodeLease(api, settings.node_name, holder)
        self.ready = False
        """True once the node holds its Lease and registered its Node."""

    async def run(self, stop: asyncio.Event) -> None:
        """Hold the node's Lease (:class:`NodeTaken` if a live node of this name holds it), register
        the Node, then bind and run pods until ``stop``."""
        await self.lease.acquire()
        try:
            await self._serve(stop)
        finally:
            await self.lease.release()

    async def _serve(self, stop: asyncio.Event) -> None:
        await self._register_node()
        self.ready = True
        pods = informer(self._core.list_pod_for_all_namespaces, self._pods, self._changed, stop, what="pods")
        groups = informer(self._list_podgroups, self._podgroups, self._changed, stop, what="podgroups")
        node = informer(self._list_own_node, self._nodes, self._changed, stop, what="node")
        watchers = [asyncio.create_task(pods), asyncio.create_task(groups), asyncio.create_task(node)]
        lease = asyncio.create_task(self._keep_lease(stop))
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.settings.resync_seconds)
                self._changed.clear()
                try:
                    await self.reconcile()
                except Exception:
                    log.exception("local node pass failed; retrying")
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            self.stop_all()
            await self._http.aclose()
        await lease  # re-raises NodeTaken when another node took the name over

    async def _keep_lease(self, stop: asyncio.Event) -> None:
        try:
            await self.lease.keep(stop)
        except NodeTaken:
            log.error("lost the node's Lease to another local node: stopping")
            stop.set()
            raise

    async def _list_podgroups(self, **kwargs: Any) -> Any:
        return await self._custom.list_cluster_custom_object(
            "scheduling.volcano.sh", "v1beta1", "podgroups", **kwargs
        )

    async def _list_own_node(self, **kwargs: Any) -> Any:
        return await self._core.list_node(field_selector=f"metadata.name={self.settings.node_name}", **kwargs)

    async def _register_node(self) -> None:
        name = self.settings.node_name
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
        try:
            await self._core.create_node(
                client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels))
            )
        except ApiException as exc:
            if exc.status != 409:  # registered by an earlier run: its labels (an admin's too) stay
                raise
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "FerryLocalNode",
            "lastTransitionTime": _now(),
            "lastHeartbeatTime": _now(),
        }
        capacity = {"cpu": "64", "memory": "256Gi", "pods": "1000", "nvidia.com/gpu": "64"}
        status = {
            "status": {
                "conditions": [ready],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": name},
                ],
                "capacity": capacity,
                "allocatable": capacity,
            }
        }
        await self._core.patch_node_status(name, status)

    # ------------------------------------------------------------------ one pass

    async def reconcile(self) -> None:
        pods = list(self._pods.values())
        own = self._nodes.get(("", self.settings.node_name)) or {}
        labels = (own.get("metadata") or {}).get("labels") or {}
        plan = schedule(pods, self._podgroups, self.settings.node_name, labels)
        for pod in plan.bind:
            await self._bind(pod)
        for pod, why in plan.waiting:
            await self._unschedulable(pod, why)
        live = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod.get("spec") or {}
            if spec.get("nodeName") != self.settings.node_name:
                continue
            uid = meta["uid"]
            live.add(uid)
            if meta.get("deletionTimestamp"):
                await self._finish_deletion(pod)
            elif (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
                self._stop(uid, release=False)
            elif uid not in self._runs:
                await self._start(pod)
            else:
                await self._check(pod, self._runs[uid])
        for uid in set(self._runs) - live:
            self._stop(uid)

    async def _bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        if meta["uid"] in self._binding:
            return
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"]),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=self.settings.node_name),
        )
        try:
            # unparsed: the API server answers with a Status, which the client cannot read as a Binding
            # (and so never raises on its own: the status code is checked here)
            response: Any = await self._core.create_namespaced_binding(
                meta["namespace"], body, _preload_content=False
            )
            if response.status >= 300:
                raise ApiException(status=response.status, reason=await response.text())
            self._binding.add(meta["uid"])
            log.info("bound %s/%s", meta["namespace"], meta["name"])
        except ApiException as exc:
            if exc.status != 409:  # already bound or gone: the watch will tell
                log.warning("binding %s/%s failed: %s", meta["namespace"], meta["name"], exc.reason)

    async def _unschedulable(self, pod: Obj, why: str) -> None:
        """Say on the pod why it waits, as kube-scheduler does: PodScheduled False, Unschedulable."""
        meta = pod["metadata"]
        conditions = (pod.get("status") or {}).get("conditions") or []
        old: Obj = next((c for c in conditions if c.get("type") == "PodScheduled"), {})
        if (old.get("status"), old.get("reason"), old.get("message")) == ("False", "Unschedulable", why):
            return
        since = old.get("lastTransitionTime") if old.get("status") == "False" else None
        scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why,
                     "lastTransitionTime": since or _now()}  # fmt: skip
        body = {
            "metadata": {"resourceVersion": meta.get("resourceVersion")},
            "status": {
                "conditions": [*(c for c in conditions if c.get("type") != "PodScheduled"), scheduled]
            },
        }
        try:
            await self._core.patch_namespaced_pod_status(meta["name"], meta["namespace"], body, **MERGE_PATCH)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or changed since: the next pass looks again
                raise

    async def _start(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = meta["uid"]
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        if unpullable := self.settings.images.missing(containers):
            # no sandbox worth an address: the pod waits on its images, as a kubelet's would
            run = PodRun(ip="", plan=ProcessPlan(argv=None), unpullable=unpullable, pull_attempts=1)
            log.warning("%s/%s: images not in the catalogue: %s", meta["namespace"], meta["name"], unpullable)
        else:
            reported_ip = (pod.get("status") or {}).get("podIP")
            ip = self._addresses.acquire(uid, port=engine_port(pod), preferred=reported_ip)
            if ferry_container(pod) is not None:  # Ferry's own image: the service's entry point
                try:
                    plan = await self._ferry_pods.plan(pod, ip)
                except PodSetupError as exc:  # e.g. its ConfigMap is not there yet: retried next pass
                    log.warning("cannot start %s/%s yet: %s", meta["namespace"], meta["name"], exc)
                    self._addresses.release(uid)
                    return
            else:
                plan = plan_for(pod, ip)
            run = PodRun(ip=ip, plan=plan)
            self._spawn(pod, run)
        self._runs[uid] = run
        await self._report(pod, run)

    def _spawn(self, pod: Obj, run: PodRun) -> None:
        meta = pod["metadata"]
        run.proven, run.restart_at = False, None
        if run.restarts and not run.plan.ferry:
            run.plan = plan_for(pod, run.ip)  # a fresh identity token for every start
        if (argv := run.plan.argv) is None:
            return
        log_name = f"{meta['namespace']}_{meta['name']}"
        run.process = spawn(log_name, argv, self.settings.log_dir, env=run.plan.env)
        log.info("started engine for %s/%s on %s:%s", meta["namespace"], meta["name"], run.ip, run.plan.port)

    async def _check(self, pod: Obj, run: PodRun) -> None:
        if run.unpullable:
            run.pull_attempts += 1  # ErrImagePull once, then ImagePullBackOff: nothing more to do
        elif run.terminated is None:
            if run.process is not None and not run.process.alive():
                self._exited(pod, run)
            if run.restart_at is not None and time.monotonic() >= run.restart_at:
                self._spawn(pod, run)
            if run.process is not None and not run.proven and run.plan.port is not None:
                with contextlib.suppress(httpx.HTTPError):
                    run.proven = await (self._probe(run) if run.plan.ferry else self._is_own_engine(run))
        await self._report(pod, run)

    def _exited(self, pod: Obj, run: PodRun) -> None:
        """The engine's process ended: restart it after a back-off, or leave it down, per restartPolicy."""
        assert run.process is not None
        status = run.process.exit_code()
        code = 1 if status is None else 128 - status if status < 0 else status  # killed by N: 128+N
        name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        reason = "Completed" if code == 0 else "Error"
        finished = {"exitCode": code, "reason": reason, "startedAt": run.started_at, "finishedAt": _now()}
        run.process, run.proven, run.last_exit = None, False, finished
        policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
        if policy == "Never" or (policy == "OnFailure" and code == 0):
            run.terminated = finished
            log.warning("engine of %s exited (%s); restartPolicy %s", name, code, policy)
            return
        delay = min(self.settings.restart_backoff * 2**run.restarts, self.settings.restart_backoff_max)
        run.restarts += 1
        run.restart_at = time.monotonic() + delay
        log.warning("engine of %s exited (%s); restart %d in %.0fs", name, code, run.restarts, delay)

    async def _probe(self, run: PodRun) -> bool:
        """A Ferry service's readinessProbe (``httpGet`` on the pod's own address)."""
        answer = await self._http.get(f"http://{run.ip}:{run.plan.port}{run.plan.health_path}")
        return answer.status_code == 200

    async def _is_own_engine(self, run: PodRun) -> bool:
        """A 200 from ``/health`` counts only with the proof that the engine holds this pod's token:
        another stack's engine answering on the same address is not this pod's engine."""
        challenge = new_secret()
        answer = await self._http.get(
            f"http://{run.ip}:{run.plan.port}/health", headers={CHALLENGE_HEADER: challenge}
        )
        if answer.status_code != 200:
            return False
        if not verify(run.plan.token, challenge, answer.headers.get(PROOF_HEADER)):
            log.warning("%s:%s answers /health but is not this pod's engine", run.ip, run.plan.port)
            return False
        return True

    def _container_state(self, run: PodRun, container: Obj, engine: bool) -> tuple[Obj, bool]:
        """``(state, ready)`` of one container as a kubelet would report it."""
        name, image = container.get("name", ""), container.get("image", "")
        if name in run.unpullable:
            if run.pull_attempts <= 1:
                return _waiting("ErrImagePull", f"{image!r} is not in the local node's catalogue"), False
            return _waiting("ImagePullBackOff", f'Back-off pulling image "{image}"'), False
        if run.unpullable:
            return _waiting("ContainerCreating", ""), False
        if not engine:
            return {"running": {"startedAt": run.started_at}}, True
        if run.terminated is not None:
            return {"terminated": run.terminated}, False
        if run.process is None and run.plan.argv is not None:
            return _waiting("CrashLoopBackOff", "back-off restarting the engine"), False
        return {"running": {"startedAt": run.started_at}}, run.proven or run.plan.argv is None

    async def _report(self, pod: Obj, run: PodRun) -> None:
        """Patch the pod's status when what the node would report differs from what it reported."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        statuses: list[Obj] = []
        for container in spec.get("containers") or []:
            engine = container.get("name") == run.plan.container and run.plan.argv is not None
            state, ready = self._container_state(run, container, engine)
            status: Obj = {"name": container["name"], "image": container.get("image", ""), "imageID": "",
                           "ready": ready, "restartCount": run.restarts if engine else 0,
                           "started": "running" in state, "state": state}  # fmt: skip
            if engine and run.last_exit is not None:
                status["lastState"] = {"terminated": run.last_exit}
            statuses.append(status)
        containers_ready = bool(statuses) and all(s["ready"] for s in statuses)
        ready = containers_ready and gates_met(pod)
        if run.terminated is not None:
            phase = "Succeeded" if run.terminated["exitCode"] == 0 and len(statuses) == 1 else "Failed"
        else:
            phase = "Pending" if run.unpullable else "Running"
        fingerprint = (phase, ready, *(str(s) for s in statuses))
        if fingerprint == run.reported and _reported_ready(pod) == ready:
            return
        status_patch: Obj = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": run.started_at,
            "conditions": merged_conditions(pod, {"PodScheduled": True, "Initialized": not run.unpullable,
                                                  "ContainersReady": containers_ready, "Ready": ready}),
            "containerStatuses": statuses,
        }  # fmt: skip
        if run.ip:
            status_patch.update(podIP=run.ip, podIPs=[{"ip": run.ip}])
        try:
            # A merge patch replaces lists (podIPs, conditions) instead of merging them by key; the
            # stubs do not list _content_type, which the client takes through **kwargs.
            # The resourceVersion makes it conditional: conditions another writer (a readiness gate's
            # controller) set since our view was taken are never overwritten; 409 → next pass.
            patch = self._core.patch_namespaced_pod_status
            body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": status_patch}
            await patch(meta["name"], meta["namespace"], body, **MERGE_PATCH)
            run.reported = fingerprint
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def _finish_deletion(self, pod: Obj) -> None:
        meta = pod["metadata"]
        self._stop(meta["uid"])
        with contextlib.suppress(ApiException):
            options = client.V1DeleteOptions(
                grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])
            )
            await self._core.delete_namespaced_pod(meta["name"], meta["namespace"], body=options)

    def _stop(self, uid: str, *, release: bool = True) -> None:
        run = self._runs.get(uid)
        if run is not None and run.process is not None:
            run.process.stop(timeout=5)
            run.process = None
        if release:
            self._runs.pop(uid, None)
            self._binding.discard(uid)
            self._addresses.release(uid)

    def stop_all(self) -> None:
        """Stop every pod's process at once (the node's own stop must not outlast its stopper)."""
        stop_all([run.process for run in self._runs.values() if run.process is not None], timeout=5)
        for uid in list(self._runs):
            self._stop(uid)
        self._addresses.close()


def _waiting(reason: str, message: str) -> Obj:
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


def _reported_ready(pod: Obj) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False
